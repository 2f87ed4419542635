//! What "blank" means for a stored or received text: one definition for every engine and entry
//! point (DESIGN §10), so a name made of ideographic spaces is as absent as a NULL.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// True when every character is Unicode White_Space, a control character (Cc) or a format
/// character (Cf: zero-width space, byte-order mark, bidi marks, ...). The empty string is blank.
pub fn is_blank(value: &str) -> bool {
    value.chars().all(|c| c.is_whitespace() || c.is_control() || c.general_category() == GeneralCategory::Format)
}

/// A value is present when it exists and is not blank.
pub fn is_present(value: Option<&str>) -> bool {
    value.is_some_and(|v| !is_blank(v))
}

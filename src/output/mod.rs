//! What commands print on stdout: a table for people, JSON or CSV for scripts (`--output`).
//! The JSON shapes are the `views` types; their JSON Schemas are in `docs/schemas/` (checked
//! against these types by a test), so a script can rely on every field.

pub mod views;

use serde::Serialize;

/// `--output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for a terminal.
    #[default]
    Table,
    /// One JSON document (see docs/schemas/).
    Json,
    /// Comma-separated rows with a header line.
    Csv,
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("cannot write JSON: {e}"))?;
    println!("{text}");
    Ok(())
}

/// Prints `rows` as CSV on stdout: the `headers` line (also when there is no row, so a
/// reader always knows the columns), then one line per row, fields in the same order.
pub fn csv<T: Serialize>(headers: &[&str], rows: &[T]) -> Result<(), String> {
    let mut writer = ::csv::WriterBuilder::new().has_headers(false).from_writer(std::io::stdout().lock());
    writer.write_record(headers).map_err(|e| format!("cannot write CSV: {e}"))?;
    for row in rows {
        writer.serialize(row).map_err(|e| format!("cannot write CSV: {e}"))?;
    }
    writer.flush().map_err(|e| format!("cannot write CSV: {e}"))
}

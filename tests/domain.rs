//! The reissue rules, exhaustively: codes, precedence, window edges, ids, and properties.
//! Codes and messages are a literal copy of DESIGN §2, so a typo in the domain fails here.

use std::collections::HashMap;

use chrono::{NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use renewal_worker::domain::Outcome;
use renewal_worker::domain::address::{AddressInput, first_invalid_field};
use renewal_worker::domain::as_of::{business_date, parse_as_of};
use renewal_worker::domain::card_number::{CardNumber, luhn_check_digit, luhn_valid, mask};
use renewal_worker::domain::codes::InvalidField;
use renewal_worker::domain::eligibility::{CardFacts, Eligible, MemberFacts, ProductFacts, Rules, evaluate};
use renewal_worker::domain::expiry::{ExpiryMonth, window_months};
use renewal_worker::domain::fee_plan::{FeeDecision, plan_fees};
use renewal_worker::domain::ids::{CardApplyNo, correlation_id};
use renewal_worker::domain::text::{is_blank, is_present};

const CODES: [(&str, &str); 10] = [
    ("000_000", "Success"),
    ("000_002", "Invalid input parameter. cardInfo.oldCardNo"),
    ("001_006", "Wallet user not found."),
    ("003_004", "Card issue status is not allowed to reissue"),
    ("003_005", "Card status is not active or suspended"),
    ("003_006", "Card expiry date is not proper to reissue."),
    ("003_007", "User name not found error"),
    ("003_008", "Par not found from cardNo."),
    ("003_009", "Not valid product for card issue type"),
    ("003_010", "Card reissue cost pay fail"),
];

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
}

const AS_OF: (i32, u32, u32) = (2026, 11, 20);

fn as_of() -> NaiveDate {
    d(AS_OF.0, AS_OF.1, AS_OF.2)
}

/// A card that passes every check for `as_of()`.
fn clean() -> CardFacts {
    CardFacts {
        card_id: 7,
        card_no: "4111111111111111".to_owned(),
        status: "ACTIVE".to_owned(),
        expiry_yyyymm: 202611,
        has_par: true,
        already_reissued: false,
        member: Some(MemberFacts {
            member_id: 3,
            cancelled: false,
            has_name: true,
            has_mobile: true,
            address: Some("1 Sejong-daero".to_owned()),
            address_detail: Some("Unit 1".to_owned()),
            zip_code: Some("04524".to_owned()),
        }),
        product: ProductFacts {
            product_id: 1,
            allows_expiry_reissue: true,
            reissue_fee: 3000,
            validity_months: Some(36),
        },
    }
}

fn member(card: &mut CardFacts) -> &mut MemberFacts {
    card.member.as_mut().expect("clean card has a member")
}

/// The pre-fee checks in batch order, each as a way to break it, with the code it yields.
type Breaker = (&'static str, fn(&mut CardFacts));

fn breakers() -> Vec<Breaker> {
    vec![
        ("000_002", |c| c.card_no = "4111111111111112".to_owned()),
        ("001_006", |c| member(c).cancelled = true),
        ("000_002", |c| member(c).zip_code = Some("123".to_owned())),
        ("003_004", |c| c.already_reissued = true),
        ("003_005", |c| c.status = "LOST".to_owned()),
        ("003_006", |c| c.expiry_yyyymm = 202701),
        ("003_007", |c| member(c).has_name = false),
        ("003_008", |c| c.has_par = false),
        ("003_009", |c| c.product.allows_expiry_reissue = false),
        ("003_009", |c| c.product.reissue_fee = 10_000_001),
        ("003_009", |c| c.product.validity_months = Some(601)),
    ]
}

fn code_of(card: &CardFacts) -> &'static str {
    match evaluate(card, as_of(), &Rules::default()) {
        Ok(_) => "000_000",
        Err(outcome) => outcome.code(),
    }
}

#[test]
fn every_code_has_its_verbatim_message() {
    let outcomes = [
        Outcome::Success,
        Outcome::InvalidInput(InvalidField::OldCardNo),
        Outcome::WalletUserNotFound,
        Outcome::AlreadyReissued,
        Outcome::CardStatusNotAllowed,
        Outcome::ExpiryNotProper,
        Outcome::UserNameNotFound,
        Outcome::ParNotFound,
        Outcome::ProductNotValid,
        Outcome::FeePayFail,
    ];
    for (outcome, (code, message)) in outcomes.iter().zip(CODES) {
        assert_eq!(outcome.code(), code);
        assert_eq!(outcome.message(), message);
    }
    assert_eq!(Outcome::InvalidInput(InvalidField::ZipCode).message(), "Invalid input parameter. addressInfo.zipCode");
    assert_eq!(Outcome::InvalidInput(InvalidField::Address).message(), "Invalid input parameter. addressInfo.address");
    assert_eq!(
        Outcome::InvalidInput(InvalidField::AddressDetail).message(),
        "Invalid input parameter. addressInfo.addressDetail"
    );
    assert_eq!(Outcome::InvalidInput(InvalidField::UserId).message(), "Invalid input parameter. userInfo.userId");
}

#[test]
fn a_clean_card_is_eligible_with_its_product_fee() {
    assert_eq!(
        evaluate(&clean(), as_of(), &Rules::default()),
        Ok(Eligible { card_id: 7, member_id: 3, fee: 3000, validity_months: 36 })
    );
    let mut no_validity = clean();
    no_validity.product.validity_months = None;
    let rules = Rules { default_validity_months: 48, ..Rules::default() };
    assert_eq!(evaluate(&no_validity, as_of(), &rules).map(|e| e.validity_months), Ok(48));
}

#[test]
fn each_check_alone_yields_its_code() {
    for (expected, breaker) in breakers() {
        let mut card = clean();
        breaker(&mut card);
        assert_eq!(code_of(&card), expected);
    }
    let mut no_member = clean();
    no_member.member = None;
    assert_eq!(code_of(&no_member), "001_006");
    let mut no_mobile = clean();
    member(&mut no_mobile).has_mobile = false;
    assert_eq!(code_of(&no_mobile), "003_008");
    // 003_010 is decided by the fee plan, after every rule passed.
    let decisions = plan_fees(
        &[Eligible { card_id: 7, member_id: 3, fee: 3000, validity_months: 60 }],
        &mut HashMap::from([(3, 2999)]),
    );
    assert_eq!(decisions, vec![FeeDecision::Decline]);
}

#[test]
fn of_two_failing_checks_the_earlier_wins_for_every_adjacent_pair() {
    let checks = breakers();
    for pair in checks.windows(2) {
        let mut card = clean();
        (pair[0].1)(&mut card);
        (pair[1].1)(&mut card);
        assert_eq!(code_of(&card), pair[0].0, "pair {} then {}", pair[0].0, pair[1].0);
    }
    // The last rule before the fee beats the fee: a product that forbids reissue charges nothing.
    let mut card = clean();
    card.product.allows_expiry_reissue = false;
    assert_eq!(code_of(&card), "003_009");
}

#[test]
fn address_fields_are_checked_in_order_and_named() {
    let ok = AddressInput { address: Some("a"), address_detail: Some("b"), zip_code: Some("12345") };
    assert_eq!(first_invalid_field(&ok), None);
    let long = "x".repeat(256);
    let cases = [
        (AddressInput { address: None, ..ok.clone() }, Some(InvalidField::Address)),
        (AddressInput { address: Some("  "), ..ok.clone() }, Some(InvalidField::Address)),
        (AddressInput { address: Some(&long), address_detail: None, ..ok.clone() }, Some(InvalidField::Address)),
        (AddressInput { address_detail: Some(""), ..ok.clone() }, Some(InvalidField::AddressDetail)),
        (AddressInput { address_detail: Some(&long), ..ok.clone() }, Some(InvalidField::AddressDetail)),
        (AddressInput { zip_code: Some("1234"), ..ok.clone() }, Some(InvalidField::ZipCode)),
        (AddressInput { zip_code: Some("123456"), ..ok.clone() }, Some(InvalidField::ZipCode)),
        (AddressInput { zip_code: Some("12a45"), ..ok.clone() }, Some(InvalidField::ZipCode)),
        (AddressInput { zip_code: None, ..ok.clone() }, Some(InvalidField::ZipCode)),
    ];
    for (input, expected) in cases {
        assert_eq!(first_invalid_field(&input), expected, "{input:?}");
    }
    let exactly_255 = "가".repeat(255);
    assert_eq!(first_invalid_field(&AddressInput { address: Some(&exactly_255), ..ok }), None);
}

#[test]
fn window_edges() {
    let nov = ExpiryMonth::from_yyyymm(202611).unwrap();
    let dec = ExpiryMonth::from_yyyymm(202612).unwrap();
    // 0 days: the last day of the expiry month.
    assert_eq!(nov.days_until_end(d(2026, 11, 30)), 0);
    assert!(nov.within_window(d(2026, 11, 30), 30));
    // Already expired.
    assert!(!nov.within_window(d(2026, 12, 1), 30));
    // 30 days in, 31 days out.
    assert_eq!(dec.days_until_end(d(2026, 12, 1)), 30);
    assert!(dec.within_window(d(2026, 12, 1), 30));
    assert_eq!(dec.days_until_end(d(2026, 11, 30)), 31);
    assert!(!dec.within_window(d(2026, 11, 30), 30));
    // Month ends: 30- and 31-day months, February in leap and common years.
    assert_eq!(ExpiryMonth::from_yyyymm(202604).unwrap().last_day(), d(2026, 4, 30));
    assert_eq!(ExpiryMonth::from_yyyymm(202612).unwrap().last_day(), d(2026, 12, 31));
    assert_eq!(ExpiryMonth::from_yyyymm(202802).unwrap().last_day(), d(2028, 2, 29));
    assert_eq!(ExpiryMonth::from_yyyymm(202702).unwrap().last_day(), d(2027, 2, 28));
    assert_eq!(ExpiryMonth::from_yyyymm(210002).unwrap().last_day(), d(2100, 2, 28));
    let feb28 = ExpiryMonth::from_yyyymm(202802).unwrap();
    assert!(feb28.within_window(d(2028, 1, 30), 30)); // 30 days to Feb 29
    assert!(!feb28.within_window(d(2028, 1, 29), 30)); // 31 days
    // A configurable window.
    assert!(dec.within_window(d(2026, 11, 20), 41));
    assert!(!dec.within_window(d(2026, 11, 20), 40));
    // Malformed months are not months.
    for raw in [202613, 202600, 99901, -202611, 0] {
        assert!(ExpiryMonth::from_yyyymm(raw).is_none(), "{raw}");
    }
    let mut card = clean();
    card.expiry_yyyymm = 202613;
    assert_eq!(code_of(&card), "003_006");
}

#[test]
fn window_months_cover_exactly_the_window() {
    let months = |y, m, day, w| window_months(d(y, m, day), w).iter().map(|m| m.yyyymm()).collect::<Vec<_>>();
    assert_eq!(months(2026, 11, 20, 30), vec![202611]);
    assert_eq!(months(2026, 11, 30, 30), vec![202611]);
    assert_eq!(months(2026, 12, 1, 30), vec![202612]);
    assert_eq!(months(2027, 1, 31, 30), vec![202701, 202702]);
    assert_eq!(months(2026, 11, 20, 0), Vec::<i64>::new());
    assert_eq!(months(2026, 11, 20, 75), vec![202611, 202612, 202701]);
    // Every day of four years: a month is listed iff the rule says it is in the window.
    let mut day = d(2026, 1, 1);
    while day < d(2030, 1, 1) {
        let listed = window_months(day, 30);
        let mut m = ExpiryMonth::of_date(day).minus_months(2);
        for _ in 0..6 {
            assert_eq!(listed.contains(&m), m.within_window(day, 30), "{day} {m:?}");
            m = m.plus_months(1);
        }
        day = day.succ_opt().unwrap();
    }
}

#[test]
fn business_date_is_taken_in_the_issuer_time_zone() {
    let seoul: chrono_tz::Tz = "Asia/Seoul".parse().unwrap();
    // 2026-11-30 15:30 UTC is already 2026-12-01 00:30 in Seoul (UTC+9).
    let late = Utc.with_ymd_and_hms(2026, 11, 30, 15, 30, 0).unwrap();
    assert_eq!(business_date(late, chrono_tz::UTC), d(2026, 11, 30));
    assert_eq!(business_date(late, seoul), d(2026, 12, 1));
    // The November card is renewable on the UTC date and already expired on the Seoul date.
    let nov = ExpiryMonth::from_yyyymm(202611).unwrap();
    assert!(nov.within_window(business_date(late, chrono_tz::UTC), 30));
    assert!(!nov.within_window(business_date(late, seoul), 30));
    // 14:59 UTC is still the same day in Seoul.
    let before = Utc.with_ymd_and_hms(2026, 11, 30, 14, 59, 59).unwrap();
    assert_eq!(business_date(before, seoul), d(2026, 11, 30));
}

#[test]
fn as_of_parsing_is_strict() {
    assert_eq!(parse_as_of("2026-11-24"), Some(d(2026, 11, 24)));
    for bad in ["2026-13-01", "2026-02-30", "24/11/2026", "2026-1-5", "", "2026-11-24T00:00"] {
        assert_eq!(parse_as_of(bad), None, "{bad}");
    }
}

#[test]
fn luhn() {
    for valid in ["4111111111111111", "5500005555555559", "79927398713", "0"] {
        assert!(luhn_valid(valid), "{valid}");
    }
    for invalid in ["4111111111111112", "79927398710", "", "41111111111a1111"] {
        assert!(!luhn_valid(invalid), "{invalid}");
    }
    assert_eq!(luhn_check_digit("411111111111111"), 1);
    assert!(CardNumber::parse("4111111111111111").is_some());
    assert!(CardNumber::parse("411111111111111").is_none());
    assert!(CardNumber::parse("4111-11111111111").is_none());
    assert!(CardNumber::parse("41111111111111111").is_none());
}

#[test]
fn masking_never_shows_more_than_six_and_four() {
    assert_eq!(mask("4111111111111111"), "411111******1111");
    assert_eq!(mask("411111111111111"), "invalid(len=15)");
    assert_eq!(mask("4111AB1111111111"), "invalid(len=16)");
    assert_eq!(mask(""), "invalid(len=0)");
}

#[test]
fn card_apply_no_is_22_digits_unique_and_reproducible() {
    let day = d(2026, 11, 24);
    let mut seen = std::collections::HashSet::with_capacity(1_000_000);
    for card_id in 0..1_000_000i64 {
        let no = CardApplyNo::derive(day, card_id, card_id % 3).unwrap();
        assert_eq!(no.as_str().len(), 22);
        assert!(seen.insert(no.as_str().to_owned()), "duplicate {no}");
    }
    assert!(seen.iter().all(|n| n.bytes().all(|b| b.is_ascii_digit())));
    assert_eq!(CardApplyNo::derive(day, 42, 0).unwrap(), CardApplyNo::derive(day, 42, 0).unwrap());
    assert_eq!(CardApplyNo::derive(day, 42, 1).unwrap().as_str(), "2611240000000000420001");
    assert_ne!(CardApplyNo::derive(day, 42, 1).unwrap(), CardApplyNo::derive(day, 42, 0).unwrap());
    assert_eq!(CardApplyNo::derive(day, 42, 1).unwrap().as_of(), Some(day));
    assert!(CardApplyNo::derive(day, 1_000_000_000_000, 0).is_err());
    assert!(CardApplyNo::derive(day, -1, 0).is_err());
    // A card with a long history wraps around its day's 10,000 numbers instead of failing.
    assert_eq!(CardApplyNo::derive(day, 1, 100).unwrap().as_str(), "2611240000000000010100");
    assert_eq!(CardApplyNo::derive(day, 1, 10_000).unwrap(), CardApplyNo::derive(day, 1, 0).unwrap());
    assert!(CardApplyNo::parse("2611240000000000010100").is_ok());
    assert!(CardApplyNo::parse("261124000000000001010").is_err());
    assert!(CardApplyNo::parse("26112400000000000101ab").is_err());
}

#[test]
fn a_taken_card_apply_no_is_skipped_and_a_full_day_is_reported() {
    let day = d(2026, 11, 24);
    let no = |seq| CardApplyNo::derive(day, 9, seq).unwrap();
    let mut taken: std::collections::HashSet<CardApplyNo> = (3..7).map(no).collect();
    assert_eq!(CardApplyNo::first_free(day, 9, 3, &taken).unwrap(), Some(no(7)));
    assert_eq!(CardApplyNo::first_free(day, 9, 0, &taken).unwrap(), Some(no(0)));
    taken.extend((7..10_000).map(no));
    assert_eq!(CardApplyNo::first_free(day, 9, 5, &taken).unwrap(), Some(no(0)), "wraps around");
    taken.extend((0..3).map(no));
    assert_eq!(CardApplyNo::first_free(day, 9, 5, &taken).unwrap(), None);
    let (low, high) = CardApplyNo::day_range(day, 9).unwrap();
    assert_eq!((low, high), (no(0), no(9_999)));
}

#[test]
fn blank_means_white_space_control_or_format_characters_only() {
    for blank in
        ["", " ", "\t\n\r", "\u{3000}", "\u{00A0}", "\u{200B}", "\u{FEFF}", " \u{3000}\u{200B}\t", "\u{0}", "\u{2028}"]
    {
        assert!(is_blank(blank), "{blank:?} is blank");
        assert!(!is_present(Some(blank)));
    }
    for text in ["a", " 김 ", "\u{3000}x", "0", "\u{200B}1"] {
        assert!(!is_blank(text), "{text:?} is not blank");
        assert!(is_present(Some(text)));
    }
    assert!(!is_present(None));
    for blank in ["\u{3000}", "\t\n", "\u{200B}"] {
        let input = AddressInput { address: Some(blank), address_detail: Some("x"), zip_code: Some("12345") };
        assert_eq!(first_invalid_field(&input), Some(InvalidField::Address));
        let input = AddressInput { address: Some("x"), address_detail: Some(blank), zip_code: Some("12345") };
        assert_eq!(first_invalid_field(&input), Some(InvalidField::AddressDetail));
    }
}

#[test]
fn a_product_with_impossible_money_or_validity_is_not_valid() {
    let rules = Rules::default();
    for (fee, validity, valid) in [
        (0, Some(1), true),
        (10_000_000, Some(600), true),
        (0, None, true),
        (10_000_001, Some(60), false),
        (i64::MAX, Some(60), false),
        (-1, Some(60), false),
        (0, Some(0), false),
        (0, Some(601), false),
        (0, Some(i64::MAX), false),
        (0, Some(-5), false),
    ] {
        let mut card = clean();
        card.product.reissue_fee = fee;
        card.product.validity_months = validity;
        let expected = if valid { "000_000" } else { "003_009" };
        assert_eq!(code_of(&card), expected, "fee {fee}, validity {validity:?}");
        assert_eq!(card.product.problem(&rules).is_none(), valid);
    }
}

#[test]
fn correlation_ids_have_the_seed_form() {
    let re = regex::Regex::new(r"^\d{12}-[0-9a-f]{7}$").unwrap();
    let at = d(2026, 11, 24).and_hms_opt(2, 0, 5).unwrap();
    for card_id in 0..10_000 {
        let id = correlation_id(at, 99, card_id);
        assert!(re.is_match(&id), "{id}");
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("261124020005-"));
    }
}

#[test]
fn fees_are_sequenced_per_member_in_card_order() {
    let e = |card_id, member_id, fee| Eligible { card_id, member_id, fee, validity_months: 60 };
    let mut balances = HashMap::from([(1, 12_000), (2, 0)]);
    let cards = [e(10, 1, 10_000), e(11, 1, 3_000), e(12, 1, 2_000), e(13, 2, 0), e(14, 2, 1), e(15, 3, 5)];
    let decisions = plan_fees(&cards, &mut balances);
    assert_eq!(
        decisions,
        vec![
            FeeDecision::Charge(10_000),
            FeeDecision::Decline,       // 2,000 left does not cover 3,000 ...
            FeeDecision::Charge(2_000), // ... but a later, cheaper card is still tried
            FeeDecision::Free,
            FeeDecision::Decline,
            FeeDecision::Decline, // no wallet known: no balance
        ]
    );
    assert_eq!(balances[&1], 0);
}

fn arb_card() -> impl Strategy<Value = CardFacts> {
    let member =
        (
            any::<i64>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(".{0,300}"),
            prop::option::of(".{0,300}"),
            prop::option::of("[0-9a-z]{0,7}"),
        )
            .prop_map(|(member_id, cancelled, has_name, has_mobile, address, address_detail, zip_code)| {
                MemberFacts { member_id, cancelled, has_name, has_mobile, address, address_detail, zip_code }
            });
    let member = prop::option::of(member);
    (
        any::<i64>(),
        prop_oneof!["[0-9]{16}", ".{0,20}"],
        prop_oneof![Just("ACTIVE".to_owned()), Just("SUSPENDED".to_owned()), ".{0,12}"],
        any::<i64>(),
        any::<bool>(),
        any::<bool>(),
        member,
        (any::<i64>(), any::<bool>(), any::<i64>(), prop::option::of(any::<i64>())),
    )
        .prop_map(|(card_id, card_no, status, expiry_yyyymm, has_par, already_reissued, member, product)| {
            CardFacts {
                card_id,
                card_no,
                status,
                expiry_yyyymm,
                has_par,
                already_reissued,
                member,
                product: ProductFacts {
                    product_id: product.0,
                    allows_expiry_reissue: product.1,
                    reissue_fee: product.2,
                    validity_months: product.3,
                },
            }
        })
}

proptest! {
    #[test]
    fn evaluation_never_panics_on_arbitrary_rows(card in arb_card(), days in -100_000i64..100_000, window in 0u32..400) {
        let as_of = as_of() + chrono::Duration::days(days);
        let _ = evaluate(&card, as_of, &Rules { window_days: window, ..Rules::default() });
        let _ = mask(&card.card_no);
    }

    #[test]
    fn the_earliest_failing_check_wins(mask_bits in 1u16..(1 << 11)) {
        let checks = breakers();
        let mut card = clean();
        let mut earliest = None;
        for (i, (code, breaker)) in checks.iter().enumerate() {
            if mask_bits & (1 << i) != 0 {
                breaker(&mut card);
                earliest.get_or_insert(*code);
            }
        }
        prop_assert_eq!(Some(code_of(&card)), earliest);
    }

    #[test]
    fn fee_plan_never_overdraws(fees in prop::collection::vec((0i64..4, 0i64..20_000), 0..40), start in 0i64..50_000) {
        let cards: Vec<Eligible> = fees.iter().enumerate()
            .map(|(i, (member, fee))| Eligible { card_id: i as i64, member_id: *member, fee: *fee, validity_months: 60 })
            .collect();
        let mut balances: HashMap<i64, i64> = (0..4).map(|m| (m, start)).collect();
        let decisions = plan_fees(&cards, &mut balances);
        for member in 0..4 {
            let charged: i64 = cards.iter().zip(&decisions)
                .filter(|(c, _)| c.member_id == member)
                .map(|(_, d)| if let FeeDecision::Charge(f) = d { *f } else { 0 })
                .sum();
            prop_assert!(charged <= start);
            prop_assert_eq!(balances[&member], start - charged);
        }
    }
}

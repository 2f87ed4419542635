//! Deterministic demo data: the same `--cards`, `--seed` and `--as-of` give the same rows.
//!
//! The first cards are a fixed showcase that trips every outcome code; the rest are drawn with
//! a realistic mix (about 10% expiring inside the window, a few malformed or incomplete rows).
//! Nothing here records which code a card "should" get: tests derive that from business columns.

use chrono::NaiveDate;

use crate::domain::address::DeliveryAddress;
use crate::domain::card_number::luhn_check_digit;
use crate::domain::expiry::{ExpiryMonth, window_months};
use crate::domain::ids::{CardApplyNo, correlation_id};
use crate::store::{CardRow, DemoData, MemberRow, NewApplication, PaymentState, ProductRow};

pub const DEFAULT_SEED: u64 = 42;
const FREE: i64 = 1;
const CLASSIC: i64 = 2;
const PREMIUM: i64 = 3;
const TRAVEL: i64 = 4;
const GIFT: i64 = 5;

fn products() -> Vec<ProductRow> {
    let p = |id, name: &str, card_type: &str, allows, fee, validity| ProductRow {
        id,
        name: name.to_owned(),
        card_type: card_type.to_owned(),
        allows_expiry_reissue: allows,
        reissue_fee: fee,
        validity_months: validity,
    };
    vec![
        p(FREE, "Mobile Basic", "MOBILE", true, 0, 60),
        p(CLASSIC, "Plastic Classic", "PHYSICAL", true, 3_000, 60),
        p(PREMIUM, "Plastic Premium", "PHYSICAL", true, 10_000, 36),
        p(TRAVEL, "Travel", "PHYSICAL", true, 5_000, 48),
        p(GIFT, "Gift", "PHYSICAL", false, 0, 12),
    ]
}

/// A valid 16-digit number: issuer prefix 9410, the card id in 11 digits, a Luhn check digit.
pub fn demo_card_number(card_id: i64) -> String {
    let body = format!("9410{card_id:011}");
    let check = luhn_check_digit(&body);
    format!("{body}{check}")
}

struct Gen {
    rng: fastrand::Rng,
    as_of: NaiveDate,
    window: Vec<ExpiryMonth>,
    /// One in `sparse` of the cards drawn into the window stay there (see `generate`).
    sparse: u32,
}

impl Gen {
    fn chance(&mut self, percent: f64) -> bool {
        self.rng.f64() * 100.0 < percent
    }

    fn member(&mut self, id: i64) -> MemberRow {
        let r = &mut self.rng;
        let surnames = ["Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon"];
        let given = ["Minjun", "Seoyeon", "Jiho", "Haeun", "Dohyun", "Jiwoo", "Yerin", "Junseo"];
        let streets = ["Teheran-ro", "Sejong-daero", "Gangnam-daero", "Olympic-ro", "Hangang-daero"];
        let name = format!("{} {} {}", surnames[r.usize(..surnames.len())], given[r.usize(..given.len())], id);
        let address = format!("{} {}, Seoul", r.u32(1..400), streets[r.usize(..streets.len())]);
        let balance = match r.u32(0..100) {
            0..60 => 100_000,
            60..85 => r.i64(0..15_000),
            _ => 0,
        };
        let mut m = MemberRow {
            id,
            name: Some(name),
            mobile: Some(format!("010-{:04}-{:04}", r.u32(0..10_000), r.u32(0..10_000))),
            status: "ACTIVE".to_owned(),
            address: Some(address),
            address_detail: Some(format!("Apt {}-{}", r.u32(100..120), r.u32(100..2000))),
            zip_code: Some(format!("{:05}", r.u32(1_000..64_000))),
            balance,
        };
        if self.chance(1.0) {
            m.status = "CANCELLED".to_owned();
        } else if self.chance(1.0) {
            m.status = "DORMANT".to_owned();
        }
        if self.chance(1.0) {
            m.name = None;
        }
        if self.chance(1.0) {
            m.mobile = None;
        }
        if self.chance(0.5) {
            m.zip_code = Some("1234".to_owned());
        }
        if self.chance(0.3) {
            m.address = Some("   ".to_owned());
        }
        if self.chance(0.2) {
            m.address_detail = Some("x".repeat(300));
        }
        m
    }

    fn expiry(&mut self) -> i64 {
        let here = ExpiryMonth::of_date(self.as_of);
        let roll = self.rng.u32(0..100);
        let last = self.window.last().copied().unwrap_or(here);
        // A sparser set moves the others past the window: no extra draw at `sparse` 1, so the
        // default data stays what it always was for a seed.
        let thinned = roll < 10 && self.sparse > 1 && self.rng.u32(0..self.sparse) != 0;
        let month = if thinned {
            last.plus_months(self.rng.u32(1..60))
        } else if roll < 10 && !self.window.is_empty() {
            self.window[self.rng.usize(..self.window.len())]
        } else if roll < 15 {
            // Already expired: 1 to 24 months ago.
            here.minus_months(self.rng.u32(1..25))
        } else {
            last.plus_months(self.rng.u32(1..60))
        };
        month.yyyymm()
    }

    fn card(&mut self, id: i64, members: i64) -> CardRow {
        let product = match self.rng.u32(0..100) {
            0..35 => FREE,
            35..65 => CLASSIC,
            65..75 => PREMIUM,
            75..90 => TRAVEL,
            _ => GIFT,
        };
        let status = match self.rng.u32(0..100) {
            0..88 => "ACTIVE",
            88..93 => "SUSPENDED",
            93..95 => "LOST",
            95..98 => "TERMINATED",
            _ => "INACTIVE",
        };
        let mut card_no = demo_card_number(id);
        if self.chance(0.2) {
            card_no = malformed(&card_no, self.rng.u32(0..3));
        }
        CardRow {
            id,
            card_no,
            member_id: self.rng.i64(1..=members),
            product_id: product,
            status: status.to_owned(),
            expiry_yyyymm: self.expiry(),
            par: (!self.chance(1.0)).then(|| format!("PAR{:025}", self.rng.u64(..))),
        }
    }
}

/// A unique but invalid variant of a valid number: too short, wrong check digit, or letters.
fn malformed(valid: &str, kind: u32) -> String {
    match kind {
        0 => valid[..15].to_owned(),
        1 => {
            let check = valid.as_bytes()[15] - b'0';
            format!("{}{}", &valid[..15], (check + 1) % 10)
        }
        _ => format!("{}AB{}", &valid[..4], &valid[6..]),
    }
}

/// `cards` cards around `as_of`: about 10% of them expire inside the window, or one in `sparse`
/// of those 10% (a larger card base holding the same night's work: 10M cards at `sparse` 10 hold
/// about the candidates of 1M at 1).
pub fn generate(cards: u64, seed: u64, as_of: NaiveDate, window_days: u32, sparse: u32) -> DemoData {
    let window = window_months(as_of, window_days);
    let mut g = Gen { rng: fastrand::Rng::with_seed(seed), as_of, window: window.clone(), sparse: sparse.max(1) };
    let cards = cards as i64;
    let showcase = showcase();
    let members = (cards * 6 / 10).max(1) + showcase.len() as i64;
    let mut data = DemoData { products: products(), ..Default::default() };
    data.members = (1..=members).map(|id| g.member(id)).collect();
    let random_members = members - showcase.len() as i64;
    for id in 1..=cards {
        let mut card = g.card(id, random_members.max(1));
        if let Some(case) = showcase.get((id - 1) as usize) {
            let member_id = random_members + id;
            let member = &mut data.members[(member_id - 1) as usize];
            *member = g.member(member_id);
            case.apply(&mut card, member, &window, as_of);
            card.member_id = member_id;
            let earlier = as_of - chrono::Duration::days(10);
            // Demo card ids always fit a card application number.
            if let (true, Ok(card_apply_no)) = (case.reissued, CardApplyNo::derive(earlier, id, 0)) {
                let validity = 60;
                let text = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_owned());
                data.reissued.push(NewApplication {
                    card_id: id,
                    member_id,
                    product_id: card.product_id,
                    delivery: DeliveryAddress {
                        address: text(&member.address, "-"),
                        address_detail: text(&member.address_detail, "-"),
                        zip_code: text(&member.zip_code, "00000"),
                    },
                    card_apply_no,
                    attempt: 0,
                    fee: 0,
                    new_expiry_yyyymm: ExpiryMonth::of_date(earlier).plus_months(validity).yyyymm(),
                    correlation_id: correlation_id(earlier.and_hms_opt(2, 0, 0).unwrap_or_default(), seed, id),
                    payment_state: PaymentState::Applied,
                    run_id: None,
                });
            }
        }
        data.cards.push(card);
    }
    data
}

/// A hand-made card that trips one outcome; applied over a generated, otherwise clean row.
struct Case {
    tweak: fn(&mut CardRow, &mut MemberRow),
    in_window: bool,
    reissued: bool,
}

impl Case {
    fn apply(&self, card: &mut CardRow, member: &mut MemberRow, window: &[ExpiryMonth], as_of: NaiveDate) {
        let first = window.first().copied().unwrap_or_else(|| ExpiryMonth::of_date(as_of));
        let last = window.last().copied().unwrap_or(first);
        card.expiry_yyyymm = if self.in_window { first } else { last.plus_months(6) }.yyyymm();
        card.card_no = demo_card_number(card.id);
        card.status = "ACTIVE".to_owned();
        card.product_id = FREE;
        card.par = Some(format!("PAR{:025}", card.id));
        member.status = "ACTIVE".to_owned();
        member.name = Some(format!("Showcase Member {}", member.id));
        member.mobile = Some("010-0000-0000".to_owned());
        member.address = Some("1 Sejong-daero, Seoul".to_owned());
        member.address_detail = Some("Unit 1".to_owned());
        member.zip_code = Some("04524".to_owned());
        member.balance = 100_000;
        (self.tweak)(card, member);
    }
}

fn showcase() -> Vec<Case> {
    let c = |tweak, in_window, reissued| Case { tweak, in_window, reissued };
    vec![
        c(|_, _| {}, true, false),                                            // 000_000 free
        c(|card, _| card.product_id = CLASSIC, true, false),                  // 000_000 with fee
        c(|card, _| card.card_no = malformed(&card.card_no, 0), true, false), // 000_002 card no
        c(|_, m| m.zip_code = Some("12-34".to_owned()), true, false),         // 000_002 zip
        c(|_, m| m.status = "CANCELLED".to_owned(), true, false),             // 001_006
        c(|_, _| {}, true, true),                                             // 003_004 (run --card)
        c(|card, _| card.status = "TERMINATED".to_owned(), true, false),      // 003_005
        c(|_, _| {}, false, false),                                           // 003_006 (run --card)
        c(|_, m| m.name = None, true, false),                                 // 003_007
        c(|card, _| card.par = None, true, false),                            // 003_008 PAR
        c(|_, m| m.mobile = None, true, false),                               // 003_008 mobile
        c(|card, _| card.product_id = GIFT, true, false),                     // 003_009
        c(
            |card, m| {
                card.product_id = PREMIUM;
                m.balance = 9_999
            },
            true,
            false,
        ), // 003_010
    ]
}

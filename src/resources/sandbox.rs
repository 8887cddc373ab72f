//! The sandbox bank behind the embedded default: customers `alice`, `bob` and `carol` with
//! generated passwords (stored as scrypt hashes), two or three accounts each, and a few hundred
//! transactions over the last six months with realistic dates, payees and amounts.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use openssl::pkcs5::scrypt;
use time::{Duration, OffsetDateTime, Time};

use crate::clock;
use crate::store::{
    AccountRecord, CustomerRecord, SandboxSeed, Store, StoreError, TransactionRecord,
};

/// scrypt cost: N = 2^15, r = 8, p = 1 (32 MiB, tens of milliseconds per login).
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u64 = 8;
const SCRYPT_P: u64 = 1;
const SCRYPT_MAXMEM: u64 = 64 * 1024 * 1024;
/// The sandbox bank's sort code.
pub const SORT_CODE: &str = "040400";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("password hashing failed: {0}")]
    Kdf(#[from] openssl::error::ErrorStack),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn random_bytes<const N: usize>() -> Result<[u8; N], openssl::error::ErrorStack> {
    let mut buf = [0u8; N];
    openssl::rand::rand_bytes(&mut buf)?;
    Ok(buf)
}

/// `scrypt$<log2 N>$<r>$<p>$<salt>$<hash>` (base64 without padding).
pub fn hash_password(password: &str) -> Result<String, openssl::error::ErrorStack> {
    let salt = random_bytes::<16>()?;
    let mut out = [0u8; 32];
    scrypt(
        password.as_bytes(),
        &salt,
        1 << SCRYPT_LOG_N,
        SCRYPT_R,
        SCRYPT_P,
        SCRYPT_MAXMEM,
        &mut out,
    )?;
    Ok(format!(
        "scrypt${SCRYPT_LOG_N}${SCRYPT_R}${SCRYPT_P}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    ))
}

/// Checks `password` against a stored hash in constant time; anything malformed is a mismatch.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let ["scrypt", log_n, r, p, salt, expected] = parts.as_slice() else {
        return false;
    };
    let (Ok(log_n), Ok(r), Ok(p)) = (log_n.parse::<u8>(), r.parse::<u64>(), p.parse::<u64>())
    else {
        return false;
    };
    let (Ok(salt), Ok(expected)) = (
        STANDARD_NO_PAD.decode(salt),
        STANDARD_NO_PAD.decode(expected),
    ) else {
        return false;
    };
    if log_n > 20 || expected.len() != 32 {
        return false;
    }
    let mut out = [0u8; 32];
    if scrypt(
        password.as_bytes(),
        &salt,
        1 << log_n,
        r,
        p,
        SCRYPT_MAXMEM * 4,
        &mut out,
    )
    .is_err()
    {
        return false;
    }
    openssl::memcmp::eq(&out, &expected)
}

/// A 16-character password from an alphabet without look-alikes.
pub fn generate_password() -> Result<String, openssl::error::ErrorStack> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    Ok(random_bytes::<16>()?
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// Minor units as an Open Banking amount string: 123456 → `1234.56`.
pub fn format_minor(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// An Open Banking amount string (`^\d{1,13}(\.\d{1,5})?$`) in minor units; `None` when it has
/// fractions of a penny or is not an amount.
pub fn parse_minor(amount: &str) -> Option<i64> {
    let (whole, frac) = amount.split_once('.').unwrap_or((amount, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (pence, rest) = frac.split_at(frac.len().min(2));
    if rest.bytes().any(|b| b != b'0') {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let pence: i64 = format!("{pence:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(pence)
}

/// A small deterministic generator (xorshift64*), seeded once from OpenSSL's RNG: the shape of
/// the data is realistic, the figures differ per installation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo + 1).unwrap_or(1).max(1);
        lo + i64::try_from(self.next() % span).unwrap_or(0)
    }
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        let i = usize::try_from(self.next() % items.len().max(1) as u64).unwrap_or(0);
        items.get(i).copied().unwrap_or_default()
    }
}

struct Entry {
    at: OffsetDateTime,
    minor: i64,
    credit: bool,
    code: &'static str,
    description: String,
    counterparty: String,
}

struct AccountPlan {
    owner: &'static str,
    sub_type: &'static str,
    account_type: &'static str,
    nickname: &'static str,
    name: &'static str,
    opening_minor: i64,
    salary_minor: Option<i64>,
    rent_minor: i64,
    everyday: bool,
    savings_in_minor: i64,
}

const CUSTOMERS: [(&str, &str); 3] = [
    ("alice", "Alice Smith"),
    ("bob", "Bob Jones"),
    ("carol", "Carol Williams"),
];

const PLANS: [AccountPlan; 7] = [
    AccountPlan {
        owner: "alice",
        sub_type: "CurrentAccount",
        account_type: "Personal",
        nickname: "Everyday",
        name: "Ms Alice Smith",
        opening_minor: 184_250,
        salary_minor: Some(312_000),
        rent_minor: 125_000,
        everyday: true,
        savings_in_minor: 0,
    },
    AccountPlan {
        owner: "alice",
        sub_type: "Savings",
        account_type: "Personal",
        nickname: "Rainy day",
        name: "Ms Alice Smith",
        opening_minor: 640_000,
        salary_minor: None,
        rent_minor: 0,
        everyday: false,
        savings_in_minor: 30_000,
    },
    AccountPlan {
        owner: "bob",
        sub_type: "CurrentAccount",
        account_type: "Personal",
        nickname: "Main account",
        name: "Mr Bob Jones",
        opening_minor: 92_075,
        salary_minor: Some(246_000),
        rent_minor: 98_000,
        everyday: true,
        savings_in_minor: 0,
    },
    AccountPlan {
        owner: "bob",
        sub_type: "Savings",
        account_type: "Personal",
        nickname: "Holiday fund",
        name: "Mr Bob Jones",
        opening_minor: 120_000,
        salary_minor: None,
        rent_minor: 0,
        everyday: false,
        savings_in_minor: 15_000,
    },
    AccountPlan {
        owner: "carol",
        sub_type: "CurrentAccount",
        account_type: "Personal",
        nickname: "Personal",
        name: "Dr Carol Williams",
        opening_minor: 305_530,
        salary_minor: Some(458_000),
        rent_minor: 172_500,
        everyday: true,
        savings_in_minor: 0,
    },
    AccountPlan {
        owner: "carol",
        sub_type: "CurrentAccount",
        account_type: "Business",
        nickname: "Williams Consulting",
        name: "Williams Consulting Ltd",
        opening_minor: 1_254_000,
        salary_minor: None,
        rent_minor: 65_000,
        everyday: false,
        savings_in_minor: 0,
    },
    AccountPlan {
        owner: "carol",
        sub_type: "Savings",
        account_type: "Personal",
        nickname: "ISA",
        name: "Dr Carol Williams",
        opening_minor: 1_500_000,
        salary_minor: None,
        rent_minor: 0,
        everyday: false,
        savings_in_minor: 50_000,
    },
];

const GROCERS: [&str; 5] = ["Tesco", "Sainsbury's", "Waitrose", "Aldi", "Co-op Food"];
const CAFES: [&str; 4] = ["Pret A Manger", "Costa Coffee", "Caffe Nero", "Greggs"];
const SHOPS: [&str; 5] = [
    "Amazon UK",
    "John Lewis",
    "Boots",
    "Argos",
    "Marks & Spencer",
];
const TRAVEL: [&str; 3] = ["TfL Travel", "Trainline", "Uber"];
const CLIENTS: [&str; 4] = [
    "Northwind Traders",
    "Contoso Health",
    "Fabrikam Ltd",
    "Tailspin Toys",
];

fn at_day(day: OffsetDateTime, hour: i64, minute: i64) -> OffsetDateTime {
    let time = Time::from_hms(
        u8::try_from(hour.clamp(0, 23)).unwrap_or(12),
        u8::try_from(minute.clamp(0, 59)).unwrap_or(0),
        0,
    )
    .unwrap_or(Time::MIDNIGHT);
    day.replace_time(time)
}

fn plan_entries(plan: &AccountPlan, rng: &mut Rng, now: OffsetDateTime) -> Vec<Entry> {
    let start = now - Duration::days(180);
    let mut out = Vec::new();
    let mut push = |at: OffsetDateTime, minor: i64, credit: bool, code, what: &str, who: &str| {
        if at < now {
            out.push(Entry {
                at,
                minor,
                credit,
                code,
                description: what.to_string(),
                counterparty: who.to_string(),
            });
        }
    };
    for d in 0..=180 {
        let day = start + Duration::days(d);
        let dom = day.day();
        if let Some(salary) = plan.salary_minor
            && dom == 25
        {
            push(
                at_day(day, 6, 0),
                salary + rng.range(-2_000, 2_000),
                true,
                "BGC",
                "SALARY",
                "Acme Widgets plc",
            );
        }
        if plan.rent_minor > 0 && dom == 1 {
            let (what, who) = if plan.account_type == "Business" {
                ("OFFICE RENT", "Regus Workspaces")
            } else {
                ("RENT", "Greenfield Lettings")
            };
            push(at_day(day, 7, 30), plan.rent_minor, false, "SO", what, who);
        }
        if plan.everyday {
            if dom == 3 {
                push(
                    at_day(day, 8, 0),
                    rng.range(6_500, 9_800),
                    false,
                    "DD",
                    "ENERGY BILL",
                    "Octopus Energy",
                );
            }
            if dom == 12 {
                push(
                    at_day(day, 8, 0),
                    3_499,
                    false,
                    "DD",
                    "BROADBAND",
                    "BT Group",
                );
            }
            if dom == 15 {
                push(at_day(day, 8, 0), 1_099, false, "DD", "MOBILE", "Vodafone");
            }
            if rng.range(0, 6) < 2 {
                let shop = rng.pick(&GROCERS);
                push(
                    at_day(day, rng.range(9, 20), rng.range(0, 59)),
                    rng.range(1_250, 9_500),
                    false,
                    "POS",
                    "GROCERIES",
                    shop,
                );
            }
            if rng.range(0, 6) < 3 {
                let cafe = rng.pick(&CAFES);
                push(
                    at_day(day, rng.range(7, 16), rng.range(0, 59)),
                    rng.range(250, 890),
                    false,
                    "POS",
                    "COFFEE",
                    cafe,
                );
            }
            if rng.range(0, 9) == 0 {
                let shop = rng.pick(&SHOPS);
                push(
                    at_day(day, rng.range(10, 22), rng.range(0, 59)),
                    rng.range(999, 14_999),
                    false,
                    "POS",
                    "SHOPPING",
                    shop,
                );
            }
            if rng.range(0, 6) == 0 {
                let t = rng.pick(&TRAVEL);
                push(
                    at_day(day, rng.range(7, 23), rng.range(0, 59)),
                    rng.range(280, 4_500),
                    false,
                    "POS",
                    "TRAVEL",
                    t,
                );
            }
        }
        if plan.account_type == "Business" {
            if rng.range(0, 13) == 0 {
                let c = rng.pick(&CLIENTS);
                push(
                    at_day(day, rng.range(9, 17), rng.range(0, 59)),
                    rng.range(150_000, 680_000),
                    true,
                    "FPI",
                    "INVOICE PAYMENT",
                    c,
                );
            }
            if dom == 28 {
                push(
                    at_day(day, 9, 0),
                    rng.range(90_000, 140_000),
                    false,
                    "FPO",
                    "VAT",
                    "HMRC",
                );
            }
        }
        if plan.savings_in_minor > 0 && dom == 26 {
            push(
                at_day(day, 9, 0),
                plan.savings_in_minor,
                true,
                "TFR",
                "MONTHLY SAVING",
                plan.name,
            );
        }
        if plan.savings_in_minor > 0 && dom == 1 && d > 0 {
            push(
                at_day(day, 3, 0),
                rng.range(200, 2_400),
                true,
                "INT",
                "INTEREST",
                "Sandbox Bank",
            );
        }
    }
    out.sort_by_key(|e| e.at);
    out
}

/// Builds the seed: customers with fresh passwords, and returns `(username, password)` pairs.
pub fn build_seed(
    now: OffsetDateTime,
) -> Result<(SandboxSeed, Vec<(String, String)>), SandboxError> {
    let mut rng = Rng(u64::from_le_bytes(random_bytes::<8>()?) | 1);
    let mut customers = Vec::new();
    let mut credentials = Vec::new();
    for (username, display) in CUSTOMERS {
        let password = generate_password()?;
        customers.push(CustomerRecord {
            username: username.to_string(),
            display_name: display.to_string(),
            password_hash: hash_password(&password)?,
        });
        credentials.push((username.to_string(), password));
    }
    let mut accounts = Vec::new();
    let mut transactions = Vec::new();
    for (i, plan) in PLANS.iter().enumerate() {
        let account_id = format!("acc-{}", uuid::Uuid::new_v4().simple());
        let number = format!("{:08}", 10_000_000 + rng.range(0, 89_999_999));
        let mut balance = plan.opening_minor;
        for (n, e) in plan_entries(plan, &mut rng, now).into_iter().enumerate() {
            balance += if e.credit { e.minor } else { -e.minor };
            transactions.push(TransactionRecord {
                transaction_id: format!("txn-{i}-{n:04}-{}", uuid::Uuid::new_v4().simple()),
                account_id: account_id.clone(),
                booked_at: clock::ob_datetime(e.at),
                amount_minor: e.minor,
                credit_debit: if e.credit { "Credit" } else { "Debit" }.to_string(),
                code: e.code.to_string(),
                reference: format!("{} {}", e.description, e.at.month() as u8),
                description: e.description,
                counterparty: e.counterparty,
                balance_after_minor: balance,
            });
        }
        // Opened in plan order, so each customer's current account comes first.
        let opened =
            now - Duration::days(2_000 - 120 * i64::try_from(i).unwrap_or(0) - rng.range(0, 60));
        accounts.push(AccountRecord {
            account_id,
            owner: plan.owner.to_string(),
            currency: "GBP".into(),
            account_type: plan.account_type.into(),
            account_sub_type: plan.sub_type.into(),
            nickname: plan.nickname.into(),
            scheme_name: "UK.OBIE.SortCodeAccountNumber".into(),
            identification: format!("{SORT_CODE}{number}"),
            name: plan.name.into(),
            opened_at: clock::ob_datetime(opened),
            balance_minor: balance,
            updated_at: clock::ob_datetime(now),
        });
    }
    Ok((
        SandboxSeed {
            customers,
            accounts,
            transactions,
        },
        credentials,
    ))
}

/// Seeds the sandbox bank if it is empty; returns the customers' passwords when it seeded.
pub async fn seed(
    store: &Store,
    now: OffsetDateTime,
) -> Result<Option<Vec<(String, String)>>, SandboxError> {
    if store.customer(CUSTOMERS[0].0).await?.is_some() {
        return Ok(None);
    }
    let (seed, credentials) = build_seed(now)?;
    Ok(store.seed_sandbox(&seed).await?.then_some(credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() -> Result<(), openssl::error::ErrorStack> {
        let h = hash_password("correct horse")?;
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct hors", &h));
        assert!(!verify_password("correct horse", "scrypt$15$8$1$AAAA$BBBB"));
        assert!(!verify_password("correct horse", "plain"));
        assert_ne!(h, hash_password("correct horse")?, "salted");
        Ok(())
    }

    #[test]
    fn amounts_convert_between_minor_units_and_strings() {
        assert_eq!(format_minor(123_456), "1234.56");
        assert_eq!(format_minor(-5), "-0.05");
        assert_eq!(parse_minor("10.5"), Some(1_050));
        assert_eq!(parse_minor("10.50000"), Some(1_050));
        assert_eq!(parse_minor("7"), Some(700));
        assert_eq!(parse_minor("1.001"), None);
        assert_eq!(parse_minor("x"), None);
        assert_eq!(parse_minor(".5"), None);
    }

    #[test]
    fn the_seed_has_hundreds_of_transactions_whose_balances_add_up() -> Result<(), SandboxError> {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let (seed, creds) = build_seed(now)?;
        assert_eq!(creds.len(), 3);
        assert!(seed.transactions.len() > 300, "{}", seed.transactions.len());
        for owner in ["alice", "bob", "carol"] {
            let n = seed.accounts.iter().filter(|a| a.owner == owner).count();
            assert!((2..=3).contains(&n), "{owner}: {n}");
        }
        for a in &seed.accounts {
            let last = seed
                .transactions
                .iter()
                .rfind(|t| t.account_id == a.account_id)
                .map(|t| t.balance_after_minor);
            assert_eq!(last, Some(a.balance_minor), "{}", a.nickname);
        }
        assert!(
            seed.transactions
                .iter()
                .all(|t| t.booked_at.as_str() < "2027-01-15T08:00:01")
        );
        Ok(())
    }
}

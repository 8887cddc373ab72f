//! The customer's side of a consent's lifecycle: which consent is waiting for a decision, what
//! the customer may choose, the decision itself, and withdrawing access later. The customer's
//! pages render and call these; the rules live here.

use serde_json::Value;
use time::OffsetDateTime;

use crate::clock;
use crate::consent::{ConsentRecord, Kind, Status};
use crate::store::{AccountRecord, Store, StoreError};

/// Why the customer cannot decide (or withdraw) this consent now.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the request names a consent this bank does not know")]
    Unknown,
    #[error("the consent has expired")]
    Expired,
    /// Decided already (its status, when known).
    #[error("the consent has already been decided")]
    AlreadyDecided(Option<Status>),
    /// An account-access consent needs at least one of the customer's accounts; a payment or
    /// funds-confirmation consent exactly one.
    #[error("the accounts chosen do not fit the consent")]
    AccountChoice { many: bool },
    #[error("the account chosen is not the one the app asked for")]
    NotTheRequestedAccount,
    #[error("that is not one of the customer's connected apps")]
    NotTheCustomers,
    #[error("consent {0} is unreadable: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The consent `client_id` pushed a request for, still waiting for the customer's decision.
pub async fn pending(
    store: &Store,
    consent_id: &str,
    client_id: &str,
    kind: Kind,
    now: OffsetDateTime,
) -> Result<ConsentRecord, Refusal> {
    let consent = store
        .consent(consent_id)
        .await?
        .filter(|c| c.client_id == client_id && c.kind == kind)
        .ok_or(Refusal::Unknown)?;
    if consent.expires_at().is_some_and(|at| at <= now) {
        return Err(Refusal::Expired);
    }
    if consent.status != Status::AwaitingAuthorisation {
        return Err(Refusal::AlreadyDecided(Some(consent.status)));
    }
    Ok(consent)
}

/// The account a payment or funds-confirmation consent names, if it names one.
pub fn named_account(consent: &ConsentRecord) -> Result<Option<String>, Refusal> {
    let data: Value = serde_json::from_str(&consent.data)
        .map_err(|e| Refusal::Corrupt(consent.consent_id.clone(), e.to_string()))?;
    let named = match consent.kind {
        Kind::DomesticPayment => data["Initiation"]["DebtorAccount"]["Identification"].as_str(),
        Kind::FundsConfirmation => data["DebtorAccount"]["Identification"].as_str(),
        Kind::AccountAccess => None,
    };
    Ok(named.map(str::to_string))
}

/// The customer approves, sharing `chosen` of their `owned` accounts: the consent becomes
/// `Authorised` for exactly those, once (a consent decided meanwhile is refused).
pub async fn approve(
    store: &Store,
    consent: &ConsentRecord,
    psu: &str,
    owned: &[AccountRecord],
    chosen: &[String],
    now: OffsetDateTime,
) -> Result<(), Refusal> {
    let mut chosen = chosen.to_vec();
    chosen.sort();
    chosen.dedup();
    let all_owned = chosen
        .iter()
        .all(|c| owned.iter().any(|a| &a.account_id == c));
    let many = consent.kind == Kind::AccountAccess;
    let count_ok = if many {
        !chosen.is_empty()
    } else {
        chosen.len() == 1
    };
    if !all_owned || !count_ok {
        return Err(Refusal::AccountChoice { many });
    }
    if let Some(identification) = named_account(consent)?
        && !owned
            .iter()
            .any(|a| chosen.contains(&a.account_id) && a.identification == identification)
    {
        return Err(Refusal::NotTheRequestedAccount);
    }
    let stamp = clock::ob_datetime(now);
    if !store
        .authorise_consent(&consent.consent_id, psu, &chosen, &stamp)
        .await?
    {
        return Err(Refusal::AlreadyDecided(None));
    }
    Ok(())
}

/// The customer denies: the consent is `Rejected`.
pub async fn deny(
    store: &Store,
    consent: &ConsentRecord,
    now: OffsetDateTime,
) -> Result<(), Refusal> {
    store
        .transition_consent(
            &consent.consent_id,
            &[Status::AwaitingAuthorisation],
            Status::Rejected,
            &clock::ob_datetime(now),
        )
        .await?;
    Ok(())
}

/// The customer withdraws access they gave (`Authorised` → `Revoked`) to one of their own
/// consents; a single payment's consent cannot be withdrawn once given.
pub async fn withdraw(
    store: &Store,
    psu: &str,
    consent_id: &str,
    now: OffsetDateTime,
) -> Result<ConsentRecord, Refusal> {
    let consent = store
        .consent(consent_id)
        .await?
        .filter(|c| c.psu.as_deref() == Some(psu) && c.kind != Kind::DomesticPayment)
        .ok_or(Refusal::NotTheCustomers)?;
    store
        .transition_consent(
            &consent.consent_id,
            &[Status::Authorised],
            Status::Revoked,
            &clock::ob_datetime(now),
        )
        .await?;
    Ok(consent)
}

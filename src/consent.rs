//! The consent vocabulary, on the ground floor: a consent's kind and status as types, the
//! accounts a customer chose, the stored record, and the one rule every layer asks of it
//! (authorised and not expired). Storage decodes rows into these types, so a corrupt row is an
//! error where it is read, never a default; the resource and authorization layers above share
//! them without depending on each other.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::clock;

/// The kinds of consent (UK OB Read/Write v3.1), as stored in `consents.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Kind {
    AccountAccess,
    DomesticPayment,
    FundsConfirmation,
}

impl Kind {
    pub const ALL: [Kind; 3] = [
        Kind::AccountAccess,
        Kind::DomesticPayment,
        Kind::FundsConfirmation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AccountAccess => "account-access",
            Kind::DomesticPayment => "domestic-payment",
            Kind::FundsConfirmation => "funds-confirmation",
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown consent kind {s:?} (expected account-access, domestic-payment or \
                     funds-confirmation)"
                )
            })
    }
}

impl TryFrom<String> for Kind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Kind> for String {
    fn from(k: Kind) -> Self {
        k.as_str().to_string()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A consent's status, with the UK OB wire names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Status {
    AwaitingAuthorisation,
    Authorised,
    Rejected,
    Revoked,
    /// A single payment's consent after its payment.
    Consumed,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::AwaitingAuthorisation,
        Status::Authorised,
        Status::Rejected,
        Status::Revoked,
        Status::Consumed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::AwaitingAuthorisation => "AwaitingAuthorisation",
            Status::Authorised => "Authorised",
            Status::Rejected => "Rejected",
            Status::Revoked => "Revoked",
            Status::Consumed => "Consumed",
        }
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown consent status {s:?}"))
    }
}

impl TryFrom<String> for Status {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Status> for String {
    fn from(s: Status) -> Self {
        s.as_str().to_string()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The accounts a customer chose for a consent, stored as a JSON array of account ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountIds(pub Vec<String>);

impl AccountIds {
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".into())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|a| a == id)
    }

    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl TryFrom<String> for AccountIds {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&s)
            .map(Self)
            .map_err(|e| format!("account ids {s:?} are not a JSON array of strings: {e}"))
    }
}

/// A consent as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ConsentRecord {
    pub consent_id: String,
    #[sqlx(try_from = "String")]
    pub kind: Kind,
    pub client_id: String,
    #[sqlx(try_from = "String")]
    pub status: Status,
    /// The kind's details (JSON), as validated when the consent was created.
    pub data: String,
    pub risk: String,
    pub created_at: String,
    pub status_updated_at: String,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    /// The customer who authorised it.
    pub psu: Option<String>,
    /// The accounts it covers, chosen by the customer.
    #[sqlx(try_from = "String")]
    pub account_ids: AccountIds,
}

/// Why a consent can no longer back a token or a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentUnusable {
    #[error("consent {id} is no longer authorised (status {status})")]
    NotAuthorised { id: String, status: Status },
    #[error("consent {id} is no longer authorised: it expired at {at}")]
    Expired { id: String, at: String },
}

impl ConsentUnusable {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAuthorised { .. } => "consent_not_authorised",
            Self::Expired { .. } => "consent_expired",
        }
    }
}

impl ConsentRecord {
    /// When the consent expires, if it says so (`Data.ExpirationDateTime`).
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        let data: Value = serde_json::from_str(&self.data).ok()?;
        clock::parse(data["ExpirationDateTime"].as_str()?)
    }

    /// An authorised consent that has not expired may back tokens and requests; nothing else
    /// may.
    pub fn usable(&self, now: OffsetDateTime) -> Result<(), ConsentUnusable> {
        if self.status != Status::Authorised {
            return Err(ConsentUnusable::NotAuthorised {
                id: self.consent_id.clone(),
                status: self.status,
            });
        }
        if let Some(at) = self.expires_at()
            && at <= now
        {
            return Err(ConsentUnusable::Expired {
                id: self.consent_id.clone(),
                at: clock::ob_datetime(at),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_round_trip_and_refuse_strangers() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
        }
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        assert!("payment".parse::<Kind>().is_err());
        assert!("authorised".parse::<Status>().is_err());
    }

    #[test]
    fn corrupt_account_ids_are_an_error_not_an_empty_list() {
        assert_eq!(
            AccountIds::try_from(r#"["a","b"]"#.to_string()),
            Ok(AccountIds(vec!["a".into(), "b".into()]))
        );
        assert!(AccountIds::try_from("not json".to_string()).is_err());
        assert!(AccountIds::try_from("[1]".to_string()).is_err());
    }
}

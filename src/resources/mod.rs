//! Open Banking resources: consents, accounts, payments and funds confirmation, served from the
//! sandbox bank. Framework-free: handlers in `routes` call these.

pub mod accounts;
pub mod consents;
pub mod decision;
pub mod payments;
pub mod sandbox;
pub mod signin;

use crate::consent::Kind;
use crate::store::StoreError;

use consents::Permission;

/// What a route that reads or acts through a customer's consent needs of it, fixed here: the
/// policy must name the same consent kind and may narrow the permissions, never widen them.
pub struct ConsentRequirement {
    pub method: &'static str,
    pub route: &'static str,
    pub kind: Kind,
    /// The permissions that can justify the route (one is enough); empty when the kind alone
    /// decides (payments, funds confirmation).
    pub permissions: &'static [Permission],
}

const ACCOUNT_PERMISSIONS: &[Permission] = &[
    Permission::ReadAccountsBasic,
    Permission::ReadAccountsDetail,
];

pub const CONSENT_REQUIREMENTS: &[ConsentRequirement] = &[
    ConsentRequirement {
        method: "GET",
        route: "/open-banking/v3.1/aisp/accounts",
        kind: Kind::AccountAccess,
        permissions: ACCOUNT_PERMISSIONS,
    },
    ConsentRequirement {
        method: "GET",
        route: "/open-banking/v3.1/aisp/accounts/{AccountId}",
        kind: Kind::AccountAccess,
        permissions: ACCOUNT_PERMISSIONS,
    },
    ConsentRequirement {
        method: "GET",
        route: "/open-banking/v3.1/aisp/accounts/{AccountId}/balances",
        kind: Kind::AccountAccess,
        permissions: &[Permission::ReadBalances],
    },
    ConsentRequirement {
        method: "GET",
        route: "/open-banking/v3.1/aisp/accounts/{AccountId}/transactions",
        kind: Kind::AccountAccess,
        permissions: &[
            Permission::ReadTransactionsBasic,
            Permission::ReadTransactionsDetail,
        ],
    },
    ConsentRequirement {
        method: "POST",
        route: "/open-banking/v3.1/pisp/domestic-payments",
        kind: Kind::DomesticPayment,
        permissions: &[],
    },
    ConsentRequirement {
        method: "POST",
        route: "/open-banking/v3.1/cbpii/funds-confirmations",
        kind: Kind::FundsConfirmation,
        permissions: &[],
    },
];

/// A resource-layer refusal or failure, mapped once to an Open Banking error at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A request field is wrong; `code` is the Open Banking error code.
    #[error("{path}: {message}")]
    Field {
        code: &'static str,
        path: String,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("x-idempotency-key {0:?} was already used with a different request body")]
    IdempotencyMismatch(String),
    /// The consent (or the customer's choice of accounts) does not allow this: 403.
    #[error("{message}")]
    Forbidden {
        reason: &'static str,
        code: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An upstream core system answered with something the gateway cannot check against the
    /// consent: nothing of it is relayed.
    #[error("{0}")]
    UpstreamUnreadable(String),
    /// Shared state is unreachable.
    #[error("{0}")]
    Unavailable(String),
}

impl ResourceError {
    pub fn field(code: &'static str, path: &str, message: impl Into<String>) -> Self {
        Self::Field {
            code,
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// Open Banking error codes used by the resource APIs.
pub mod codes {
    pub const FIELD_INVALID: &str = "UK.OBIE.Field.Invalid";
    pub const FIELD_INVALID_DATE: &str = "UK.OBIE.Field.InvalidDate";
    pub const FIELD_MISSING: &str = "UK.OBIE.Field.Missing";
    pub const HEADER_MISSING: &str = "UK.OBIE.Header.Missing";
    pub const HEADER_INVALID: &str = "UK.OBIE.Header.Invalid";
    pub const INVALID_FORMAT: &str = "UK.OBIE.Resource.InvalidFormat";
    pub const NOT_FOUND: &str = "UK.OBIE.Resource.NotFound";
    pub const UNSUPPORTED_SCHEME: &str = "UK.OBIE.Unsupported.Scheme";
    pub const UNSUPPORTED_CURRENCY: &str = "UK.OBIE.Unsupported.Currency";
    pub const UNEXPECTED: &str = "UK.OBIE.UnexpectedError";
    pub const CONSENT_MISMATCH: &str = "UK.OBIE.Resource.ConsentMismatch";
    pub const CONSENT_NOT_AUTHORISED: &str = "UK.OBIE.Resource.InvalidConsentStatus";
    pub const RATE_LIMITED: &str = "UK.OBIE.Rules.RateLimitExceeded";
}

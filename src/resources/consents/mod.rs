//! Account-access, domestic-payment and funds-confirmation consents in UK Open Banking
//! Read/Write API v3.1 shapes: validation of the request, storage, and the response body.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::ResourceError;
use super::codes::*;
use crate::clock;
use crate::consent::{AccountIds, Kind, Status};
use crate::registry::ClientId;
use crate::store::{ConsentRecord, Store, StoreError};

mod wire;
pub use wire::*;

/// What differs between the kinds of consent; everything else is shared.
pub trait ConsentKind {
    /// Stored in `consents.kind`.
    const KIND: Kind;
    /// Prefix of the consent id, so an id tells what it is.
    const ID_PREFIX: &'static str;
    /// Collection path under the mTLS base URL.
    const PATH: &'static str;
    type Request: DeserializeOwned;
    type Details: Serialize + DeserializeOwned;
    /// Validates the request; returns the details to store and echo, and the `Risk` object.
    fn validate(
        req: Self::Request,
        now: OffsetDateTime,
    ) -> Result<(Self::Details, Option<Value>), ResourceError>;
}

pub use crate::consent::ConsentUnusable;

/// The permissions an account-access consent grants (none for other kinds).
pub fn granted_permissions(record: &ConsentRecord) -> Vec<Permission> {
    serde_json::from_str::<AccountAccessConsentDetails>(&record.data)
        .map(|d| d.permissions)
        .unwrap_or_default()
}

// ---------------------------------------------------------------- kinds

pub struct AccountAccess;
pub struct DomesticPayment;
pub struct FundsConfirmation;

impl ConsentKind for AccountAccess {
    const KIND: Kind = Kind::AccountAccess;
    const ID_PREFIX: &'static str = "aac-";
    const PATH: &'static str = "/open-banking/v3.1/aisp/account-access-consents";
    type Request = AccountAccessConsentRequest;
    type Details = AccountAccessConsentDetails;

    fn validate(
        req: Self::Request,
        now: OffsetDateTime,
    ) -> Result<(Self::Details, Option<Value>), ResourceError> {
        let d = req.data;
        if d.permissions.is_empty() {
            return Err(ResourceError::field(
                FIELD_MISSING,
                "Data.Permissions",
                "at least one permission is required",
            ));
        }
        for (i, p) in d.permissions.iter().enumerate() {
            if d.permissions[..i].contains(p) {
                return Err(ResourceError::field(
                    FIELD_INVALID,
                    "Data.Permissions",
                    format!("{p:?} is listed twice"),
                ));
            }
        }
        use Permission::*;
        let has = |p: Permission| d.permissions.contains(&p);
        let detail = has(ReadTransactionsBasic) || has(ReadTransactionsDetail);
        let direction = has(ReadTransactionsCredits) || has(ReadTransactionsDebits);
        if detail != direction {
            return Err(ResourceError::field(
                FIELD_INVALID,
                "Data.Permissions",
                "ReadTransactionsBasic or ReadTransactionsDetail must come with \
                 ReadTransactionsCredits and/or ReadTransactionsDebits, and vice versa",
            ));
        }
        let expires = future_date(
            d.expiration_date_time.as_deref(),
            "Data.ExpirationDateTime",
            now,
        )?;
        let from = date(
            d.transaction_from_date_time.as_deref(),
            "Data.TransactionFromDateTime",
        )?;
        let to = date(
            d.transaction_to_date_time.as_deref(),
            "Data.TransactionToDateTime",
        )?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(ResourceError::field(
                FIELD_INVALID_DATE,
                "Data.TransactionToDateTime",
                "TransactionToDateTime is before TransactionFromDateTime",
            ));
        }
        let details = AccountAccessConsentDetails {
            expiration_date_time: expires.map(clock::ob_datetime),
            transaction_from_date_time: from.map(clock::ob_datetime),
            transaction_to_date_time: to.map(clock::ob_datetime),
            ..d
        };
        Ok((details, Some(risk(req.risk)?)))
    }
}

impl ConsentKind for DomesticPayment {
    const KIND: Kind = Kind::DomesticPayment;
    const ID_PREFIX: &'static str = "pdc-";
    const PATH: &'static str = "/open-banking/v3.1/pisp/domestic-payment-consents";
    type Request = DomesticPaymentConsentRequest;
    type Details = DomesticPaymentConsentDetails;

    fn validate(
        req: Self::Request,
        _now: OffsetDateTime,
    ) -> Result<(Self::Details, Option<Value>), ResourceError> {
        let i = &req.data.initiation;
        text(
            &i.instruction_identification,
            "Data.Initiation.InstructionIdentification",
            35,
        )?;
        text(
            &i.end_to_end_identification,
            "Data.Initiation.EndToEndIdentification",
            35,
        )?;
        amount(&i.instructed_amount, "Data.Initiation.InstructedAmount")?;
        account(&i.creditor_account, "Data.Initiation.CreditorAccount")?;
        if let Some(debtor) = &i.debtor_account {
            account(debtor, "Data.Initiation.DebtorAccount")?;
        }
        if let Some(r) = &i.remittance_information {
            if let Some(u) = &r.unstructured {
                text(u, "Data.Initiation.RemittanceInformation.Unstructured", 140)?;
            }
            if let Some(reference) = &r.reference {
                text(
                    reference,
                    "Data.Initiation.RemittanceInformation.Reference",
                    35,
                )?;
            }
        }
        let risk = risk(req.risk)?;
        Ok((req.data, Some(risk)))
    }
}

impl ConsentKind for FundsConfirmation {
    const KIND: Kind = Kind::FundsConfirmation;
    const ID_PREFIX: &'static str = "fcc-";
    const PATH: &'static str = "/open-banking/v3.1/cbpii/funds-confirmation-consents";
    type Request = FundsConfirmationConsentRequest;
    type Details = FundsConfirmationConsentDetails;

    fn validate(
        req: Self::Request,
        now: OffsetDateTime,
    ) -> Result<(Self::Details, Option<Value>), ResourceError> {
        let d = req.data;
        account(&d.debtor_account, "Data.DebtorAccount")?;
        let expires = future_date(
            d.expiration_date_time.as_deref(),
            "Data.ExpirationDateTime",
            now,
        )?;
        Ok((
            FundsConfirmationConsentDetails {
                expiration_date_time: expires.map(clock::ob_datetime),
                ..d
            },
            None,
        ))
    }
}

// ---------------------------------------------------------------- field checks

fn date(v: Option<&str>, path: &str) -> Result<Option<OffsetDateTime>, ResourceError> {
    v.map(|s| {
        clock::parse(s).ok_or_else(|| {
            ResourceError::field(
                FIELD_INVALID_DATE,
                path,
                format!("{s:?} is not an ISO 8601 date-time with offset"),
            )
        })
    })
    .transpose()
}

fn future_date(
    v: Option<&str>,
    path: &str,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, ResourceError> {
    let d = date(v, path)?;
    if d.is_some_and(|d| d <= now) {
        return Err(ResourceError::field(
            FIELD_INVALID_DATE,
            path,
            "the date-time must be in the future",
        ));
    }
    Ok(d)
}

fn text(v: &str, path: &str, max: usize) -> Result<(), ResourceError> {
    let len = v.chars().count();
    if len == 0 || len > max || v.chars().any(char::is_control) {
        return Err(ResourceError::field(
            FIELD_INVALID,
            path,
            format!("must be 1 to {max} printable characters"),
        ));
    }
    Ok(())
}

fn amount(a: &Amount, path: &str) -> Result<(), ResourceError> {
    let (whole, frac) = match a.amount.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (a.amount.as_str(), None),
    };
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let well_formed = digits(whole, 13) && frac.is_none_or(|f| digits(f, 5));
    let positive = a.amount.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if !well_formed || !positive {
        return Err(ResourceError::field(
            FIELD_INVALID,
            &format!("{path}.Amount"),
            format!(
                "{:?} is not a positive amount (up to 13 digits and 5 decimals)",
                a.amount
            ),
        ));
    }
    if a.currency.len() != 3 || !a.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ResourceError::field(
            UNSUPPORTED_CURRENCY,
            &format!("{path}.Currency"),
            format!("{:?} is not an ISO 4217 currency code", a.currency),
        ));
    }
    Ok(())
}

const SCHEMES: [&str; 5] = [
    "UK.OBIE.SortCodeAccountNumber",
    "UK.OBIE.IBAN",
    "UK.OBIE.BBAN",
    "UK.OBIE.PAN",
    "UK.OBIE.Paym",
];

fn account(a: &CashAccount, path: &str) -> Result<(), ResourceError> {
    if !SCHEMES.contains(&a.scheme_name.as_str()) {
        return Err(ResourceError::field(
            UNSUPPORTED_SCHEME,
            &format!("{path}.SchemeName"),
            format!(
                "{:?} is not supported; use one of {}",
                a.scheme_name,
                SCHEMES.join(", ")
            ),
        ));
    }
    let id_path = format!("{path}.Identification");
    text(&a.identification, &id_path, 256)?;
    if a.scheme_name == "UK.OBIE.SortCodeAccountNumber"
        && !(a.identification.len() == 14 && a.identification.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ResourceError::field(
            FIELD_INVALID,
            &id_path,
            "a sort code and account number is 14 digits (6 + 8)",
        ));
    }
    if let Some(name) = &a.name {
        text(name, &format!("{path}.Name"), 350)?;
    }
    Ok(())
}

fn risk(v: Value) -> Result<Value, ResourceError> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(ResourceError::field(
            FIELD_INVALID,
            "Risk",
            "Risk must be a JSON object",
        ))
    }
}

// ---------------------------------------------------------------- operations

/// Parses a request body, reporting where it is malformed.
pub fn parse_body<K: ConsentKind>(body: &[u8]) -> Result<K::Request, ResourceError> {
    serde_json::from_slice(body).map_err(|e| {
        ResourceError::field(
            INVALID_FORMAT,
            "(body)",
            format!("malformed request body: {e}"),
        )
    })
}

fn request_hash(body: &Value) -> String {
    crate::digest::sha256_hex(&body.to_string())
}

/// Creates a consent of kind `K` for `client`. With an idempotency key, a repeat of the same
/// request returns the consent created the first time; a different body under it is refused.
pub async fn create<K: ConsentKind>(
    store: &Store,
    client: &ClientId,
    body: &[u8],
    idempotency_key: Option<&str>,
    mtls_url: &str,
    now: OffsetDateTime,
) -> Result<(bool, ConsentResponse<K::Details>), ResourceError>
where
    K::Details: ToSchema,
{
    let parsed_value: Value = serde_json::from_slice(body).map_err(|e| {
        ResourceError::field(INVALID_FORMAT, "(body)", format!("malformed JSON: {e}"))
    })?;
    let fingerprint = request_hash(&parsed_value);
    if let Some(key) = idempotency_key
        && let Some(existing) = store
            .consent_by_idempotency_key(client.as_str(), K::KIND, key)
            .await?
    {
        if existing.request_hash.as_deref() != Some(fingerprint.as_str()) {
            return Err(ResourceError::IdempotencyMismatch(key.to_string()));
        }
        return Ok((false, response::<K>(&existing, mtls_url)?));
    }
    let request: K::Request = parse_body::<K>(body)?;
    let (details, risk) = K::validate(request, now)?;
    let stamp = clock::ob_datetime(now);
    let record = ConsentRecord {
        consent_id: format!("{}{}", K::ID_PREFIX, uuid::Uuid::new_v4().simple()),
        kind: K::KIND,
        client_id: client.to_string(),
        status: Status::AwaitingAuthorisation,
        data: serde_json::to_string(&details)
            .map_err(|e| ResourceError::field(UNEXPECTED, "Data", e.to_string()))?,
        risk: risk.map_or_else(|| "null".to_string(), |r| r.to_string()),
        created_at: stamp.clone(),
        status_updated_at: stamp,
        idempotency_key: idempotency_key.map(str::to_string),
        request_hash: Some(fingerprint),
        psu: None,
        account_ids: AccountIds::default(),
    };
    let conflict = match store.insert_consent(&record).await {
        Ok(()) => return Ok((true, response::<K>(&record, mtls_url)?)),
        Err(StoreError::Conflict(c)) => c,
        Err(e) => return Err(e.into()),
    };
    // A concurrent request with the same key got there first: the same body gets that consent
    // (UK OB idempotency), another body is refused; one consent either way.
    let key = idempotency_key.ok_or(ResourceError::Store(StoreError::Conflict(conflict)))?;
    match store
        .consent_by_idempotency_key(client.as_str(), K::KIND, key)
        .await?
    {
        Some(existing) if existing.request_hash == record.request_hash => {
            Ok((false, response::<K>(&existing, mtls_url)?))
        }
        _ => Err(ResourceError::IdempotencyMismatch(key.to_string())),
    }
}

/// The client's own consent of kind `K`; another client's, or another kind's, is not found.
pub async fn find<K: ConsentKind>(
    store: &Store,
    client: &ClientId,
    consent_id: &str,
) -> Result<ConsentRecord, ResourceError> {
    match store.consent(consent_id).await? {
        Some(c) if c.kind == K::KIND && c.client_id == client.as_str() => Ok(c),
        _ => Err(ResourceError::NotFound(format!(
            "no consent {consent_id:?} for this client"
        ))),
    }
}

pub async fn get<K: ConsentKind>(
    store: &Store,
    client: &ClientId,
    consent_id: &str,
    mtls_url: &str,
) -> Result<ConsentResponse<K::Details>, ResourceError>
where
    K::Details: ToSchema,
{
    response::<K>(&find::<K>(store, client, consent_id).await?, mtls_url)
}

/// The TPP withdraws a consent: it is kept, with status `Revoked`, for the record.
pub async fn revoke<K: ConsentKind>(
    store: &Store,
    client: &ClientId,
    consent_id: &str,
    now: OffsetDateTime,
) -> Result<(), ResourceError> {
    find::<K>(store, client, consent_id).await?;
    store
        .set_consent_status(consent_id, Status::Revoked, &clock::ob_datetime(now))
        .await?;
    Ok(())
}

fn response<K: ConsentKind>(
    record: &ConsentRecord,
    mtls_url: &str,
) -> Result<ConsentResponse<K::Details>, ResourceError>
where
    K::Details: ToSchema,
{
    let corrupt = |e: serde_json::Error| {
        ResourceError::Store(crate::store::StoreError::Corrupt(format!(
            "consent {}: {e}",
            record.consent_id
        )))
    };
    let details: K::Details = serde_json::from_str(&record.data).map_err(corrupt)?;
    let risk: Value = serde_json::from_str(&record.risk).map_err(corrupt)?;
    Ok(ConsentResponse {
        data: ConsentData {
            consent_id: record.consent_id.clone(),
            creation_date_time: record.created_at.clone(),
            status: record.status.to_string(),
            status_update_date_time: record.status_updated_at.clone(),
            details,
        },
        risk: (!risk.is_null()).then_some(risk),
        links: Links {
            self_link: format!("{mtls_url}{}/{}", K::PATH, record.consent_id),
        },
        meta: Meta { total_pages: 1 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    fn aac(json: &str) -> Result<AccountAccessConsentDetails, ResourceError> {
        let req = parse_body::<AccountAccess>(json.as_bytes())?;
        AccountAccess::validate(req, now()).map(|(d, _)| d)
    }

    fn code(r: Result<impl std::fmt::Debug, ResourceError>) -> String {
        match r {
            Err(ResourceError::Field { code, path, .. }) => format!("{code} {path}"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn account_access_permissions_follow_the_open_banking_rules() {
        assert!(aac(r#"{"Data":{"Permissions":["ReadAccountsBasic"]},"Risk":{}}"#).is_ok());
        assert_eq!(
            code(aac(r#"{"Data":{"Permissions":[]},"Risk":{}}"#)),
            "UK.OBIE.Field.Missing Data.Permissions"
        );
        assert_eq!(
            code(aac(
                r#"{"Data":{"Permissions":["ReadTransactionsBasic"]},"Risk":{}}"#
            )),
            "UK.OBIE.Field.Invalid Data.Permissions"
        );
        assert_eq!(
            code(aac(
                r#"{"Data":{"Permissions":["ReadBalances","ReadBalances"]},"Risk":{}}"#
            )),
            "UK.OBIE.Field.Invalid Data.Permissions"
        );
        assert_eq!(
            code(aac(
                r#"{"Data":{"Permissions":["ReadEverything"]},"Risk":{}}"#
            )),
            "UK.OBIE.Resource.InvalidFormat (body)"
        );
    }

    #[test]
    fn account_access_dates_are_checked() {
        assert_eq!(
            code(aac(
                r#"{"Data":{"Permissions":["ReadBalances"],"ExpirationDateTime":"2020-01-01T00:00:00Z"},"Risk":{}}"#
            )),
            "UK.OBIE.Field.InvalidDate Data.ExpirationDateTime"
        );
        assert_eq!(
            code(aac(
                r#"{"Data":{"Permissions":["ReadBalances"],"TransactionFromDateTime":"2027-02-01T00:00:00Z","TransactionToDateTime":"2027-01-01T00:00:00Z"},"Risk":{}}"#
            )),
            "UK.OBIE.Field.InvalidDate Data.TransactionToDateTime"
        );
    }

    fn payment(amount: &str, currency: &str, scheme: &str, id: &str) -> String {
        let json = format!(
            r#"{{"Data":{{"Initiation":{{"InstructionIdentification":"i1","EndToEndIdentification":"e1","InstructedAmount":{{"Amount":"{amount}","Currency":"{currency}"}},"CreditorAccount":{{"SchemeName":"{scheme}","Identification":"{id}","Name":"Bob"}}}}}},"Risk":{{}}}}"#
        );
        code(
            parse_body::<DomesticPayment>(json.as_bytes())
                .and_then(|r| DomesticPayment::validate(r, now())),
        )
    }

    #[test]
    fn payment_amounts_currencies_and_accounts_are_validated() {
        let ok = "UK.OBIE.SortCodeAccountNumber";
        assert!(payment("10.50", "GBP", ok, "11223321325698").starts_with("Ok"));
        assert_eq!(
            payment("0.00", "GBP", ok, "11223321325698"),
            "UK.OBIE.Field.Invalid Data.Initiation.InstructedAmount.Amount"
        );
        assert_eq!(
            payment("1.123456", "GBP", ok, "11223321325698"),
            "UK.OBIE.Field.Invalid Data.Initiation.InstructedAmount.Amount"
        );
        assert_eq!(
            payment("1", "gbp", ok, "11223321325698"),
            "UK.OBIE.Unsupported.Currency Data.Initiation.InstructedAmount.Currency"
        );
        assert_eq!(
            payment("1", "GBP", "UK.OBIE.Bitcoin", "x"),
            "UK.OBIE.Unsupported.Scheme Data.Initiation.CreditorAccount.SchemeName"
        );
        assert_eq!(
            payment("1", "GBP", ok, "1234"),
            "UK.OBIE.Field.Invalid Data.Initiation.CreditorAccount.Identification"
        );
    }
}

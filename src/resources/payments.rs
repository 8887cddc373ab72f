//! Domestic payments (OBWriteDomestic2 → OBWriteDomesticResponse5) and funds confirmation
//! (OBFundsConfirmation1) against the sandbox bank. A payment must repeat its consent's
//! `Initiation` and `Risk` exactly, consumes the consent once, and is idempotent per
//! `x-idempotency-key`.

use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::ResourceError;
use super::codes::*;
use super::consents::{Amount, DomesticInitiation, DomesticPaymentConsentDetails};
use super::sandbox::parse_minor;
use crate::clock;
use crate::consent::Status;
use crate::state::SharedState;
use crate::store::{
    ConsentRecord, PaymentRecord, PaymentRefused, Store, StoreError, TransactionRecord,
};

pub const PATH: &str = "/open-banking/v3.1/pisp/domestic-payments";
const FUNDS_PATH: &str = "/open-banking/v3.1/cbpii/funds-confirmations";
const SETTLED: &str = "AcceptedSettlementCompleted";

/// OBWriteDomestic2
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PaymentRequest {
    data: PaymentRequestData,
    risk: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PaymentRequestData {
    consent_id: String,
    initiation: DomesticInitiation,
}

/// OBFundsConfirmation1
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct FundsRequest {
    data: FundsRequestData,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct FundsRequestData {
    consent_id: String,
    reference: String,
    instructed_amount: Amount,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ResourceError {
    ResourceError::Store(StoreError::Corrupt(format!("{what}: {e}")))
}

fn malformed(e: serde_json::Error) -> ResourceError {
    ResourceError::field(
        INVALID_FORMAT,
        "(body)",
        format!("malformed request body: {e}"),
    )
}

fn fingerprint(body: &Value) -> String {
    crate::digest::sha256_hex(&body.to_string())
}

fn same_consent(requested: &str, consent: &ConsentRecord) -> Result<(), ResourceError> {
    if requested != consent.consent_id {
        return Err(ResourceError::field(
            CONSENT_MISMATCH,
            "Data.ConsentId",
            format!(
                "Data.ConsentId {requested:?} is not the consent this access token was issued \
                 for ({})",
                consent.consent_id
            ),
        ));
    }
    Ok(())
}

fn response(p: &PaymentRecord, base_url: &str) -> Result<Value, ResourceError> {
    let data: Value = serde_json::from_str(&p.data).map_err(|e| corrupt(&p.payment_id, e))?;
    Ok(json!({
        "Data": data,
        "Links": { "Self": format!("{base_url}{PATH}/{}", p.payment_id) },
        "Meta": {},
    }))
}

/// What a payment request must be before anything is paid, in the sandbox bank or by an
/// upstream core system alike: it names the token's consent and repeats the consent's
/// `Initiation` and `Risk` exactly (what the customer saw and approved).
fn checked_payment(consent: &ConsentRecord, value: Value) -> Result<PaymentRequest, ResourceError> {
    let request: PaymentRequest = serde_json::from_value(value).map_err(malformed)?;
    same_consent(&request.data.consent_id, consent)?;
    let authorised: DomesticPaymentConsentDetails =
        serde_json::from_str(&consent.data).map_err(|e| corrupt(&consent.consent_id, e))?;
    let as_value = |i: &DomesticInitiation| serde_json::to_value(i).unwrap_or(Value::Null);
    if as_value(&request.data.initiation) != as_value(&authorised.initiation) {
        return Err(ResourceError::field(
            CONSENT_MISMATCH,
            "Data.Initiation",
            "the Initiation differs from the one the customer authorised in the consent",
        ));
    }
    let consent_risk: Value =
        serde_json::from_str(&consent.risk).map_err(|e| corrupt(&consent.consent_id, e))?;
    if request.risk != consent_risk {
        return Err(ResourceError::field(
            CONSENT_MISMATCH,
            "Risk",
            "the Risk differs from the consent's",
        ));
    }
    Ok(request)
}

/// Makes the payment the consent authorised and returns its response. The same idempotency
/// key with the same body returns the first response and pays nothing; with another body it
/// is refused.
pub async fn create(
    store: &Store,
    client_id: &str,
    consent: &ConsentRecord,
    body: &[u8],
    idempotency_key: &str,
    base_url: &str,
    now: OffsetDateTime,
) -> Result<Value, ResourceError> {
    let value: Value = serde_json::from_slice(body).map_err(malformed)?;
    let hash = fingerprint(&value);
    if let Some(existing) = store
        .payment_by_idempotency_key(client_id, idempotency_key)
        .await?
    {
        if existing.request_hash != hash {
            return Err(ResourceError::IdempotencyMismatch(
                idempotency_key.to_string(),
            ));
        }
        return response(&existing, base_url);
    }
    let request = checked_payment(consent, value)?;
    let account_id = consent
        .account_ids
        .first()
        .ok_or_else(|| corrupt(&consent.consent_id, "authorised without a debtor account"))?;
    let account = store
        .account(account_id)
        .await?
        .ok_or_else(|| corrupt(&consent.consent_id, "debtor account is gone"))?;
    let amount = &request.data.initiation.instructed_amount;
    if amount.currency != account.currency {
        return Err(ResourceError::field(
            UNSUPPORTED_CURRENCY,
            "Data.Initiation.InstructedAmount.Currency",
            format!(
                "the debtor account is in {}, not {}",
                account.currency, amount.currency
            ),
        ));
    }
    let minor = parse_minor(&amount.amount).ok_or_else(|| {
        ResourceError::field(
            FIELD_INVALID,
            "Data.Initiation.InstructedAmount.Amount",
            "the amount must be in whole pence",
        )
    })?;
    let stamp = clock::ob_datetime(now);
    let payment_id = format!("dp-{}", uuid::Uuid::new_v4().simple());
    let creditor = request
        .data
        .initiation
        .creditor_account
        .name
        .clone()
        .unwrap_or_else(|| {
            request
                .data
                .initiation
                .creditor_account
                .identification
                .clone()
        });
    let reference = request
        .data
        .initiation
        .remittance_information
        .as_ref()
        .and_then(|r| r.reference.clone())
        .unwrap_or_else(|| request.data.initiation.end_to_end_identification.clone());
    let transaction = TransactionRecord {
        transaction_id: format!("txn-{}", uuid::Uuid::new_v4().simple()),
        account_id: account.account_id.clone(),
        booked_at: stamp.clone(),
        amount_minor: minor,
        credit_debit: "Debit".into(),
        code: "FPO".into(),
        reference,
        description: "FASTER PAYMENT".into(),
        counterparty: creditor,
        balance_after_minor: 0,
    };
    let data = json!({
        "DomesticPaymentId": payment_id,
        "ConsentId": consent.consent_id,
        "CreationDateTime": stamp,
        "Status": SETTLED,
        "StatusUpdateDateTime": stamp,
        "Initiation": request.data.initiation,
    });
    let record = PaymentRecord {
        payment_id,
        consent_id: consent.consent_id.clone(),
        client_id: client_id.to_string(),
        account_id: account.account_id,
        transaction_id: transaction.transaction_id.clone(),
        status: SETTLED.into(),
        data: data.to_string(),
        created_at: stamp.clone(),
        status_updated_at: stamp,
        idempotency_key: idempotency_key.to_string(),
        request_hash: hash.clone(),
    };
    match store.create_payment(&record, &transaction).await {
        Ok(p) => response(&p, base_url),
        Err(PaymentRefused::ConsentNotAuthorised(id)) => {
            // A concurrent request with the same key and body may have won the race.
            match store
                .payment_by_idempotency_key(client_id, idempotency_key)
                .await?
            {
                Some(p) if p.request_hash == hash => response(&p, base_url),
                _ => Err(ResourceError::Forbidden {
                    reason: "consent_consumed",
                    code: CONSENT_NOT_AUTHORISED,
                    message: format!(
                        "consent {id} has already been used for a payment; a consent pays once"
                    ),
                }),
            }
        }
        Err(PaymentRefused::IdempotencyKeyTaken) => Err(ResourceError::IdempotencyMismatch(
            idempotency_key.to_string(),
        )),
        Err(PaymentRefused::Store(e)) => Err(e.into()),
    }
}

/// How long the gateway remembers an idempotency key of a payment it passed upstream.
const UPSTREAM_KEY_MEMORY: i64 = 86_400;

/// Before a payment goes to an upstream core system: the request passes every check the
/// sandbox bank makes ([`checked_payment`]), and the consent is consumed here, atomically, so it pays once whatever the upstream does. A
/// repeat with the same key and body passes again (the upstream gets the same
/// `x-idempotency-key`); another body under the key, or a new key once consumed, is refused.
pub async fn claim_for_upstream(
    store: &Store,
    state: &SharedState,
    client_id: &str,
    consent: &ConsentRecord,
    body: &[u8],
    idempotency_key: &str,
    now: OffsetDateTime,
) -> Result<(), ResourceError> {
    let value: Value = serde_json::from_slice(body).map_err(malformed)?;
    let hash = fingerprint(&value);
    let unavailable = |e: crate::state::StateError| ResourceError::Unavailable(e.to_string());
    let key = format!("upstream-payment:{client_id}:{idempotency_key}");
    let ts = now.unix_timestamp();
    if let Some(seen) = state.get(&key, ts).await.map_err(unavailable)? {
        return if seen == hash {
            Ok(())
        } else {
            Err(ResourceError::IdempotencyMismatch(
                idempotency_key.to_string(),
            ))
        };
    }
    checked_payment(consent, value)?;
    let consumed = store
        .transition_consent(
            &consent.consent_id,
            &[Status::Authorised],
            Status::Consumed,
            &clock::ob_datetime(now),
        )
        .await?;
    if !consumed {
        return Err(ResourceError::Forbidden {
            reason: "consent_consumed",
            code: CONSENT_NOT_AUTHORISED,
            message: format!(
                "consent {} has already been used for a payment; a consent pays once",
                consent.consent_id
            ),
        });
    }
    state
        .put(&key, &hash, ts + UPSTREAM_KEY_MEMORY, ts)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// `GET /domestic-payments/{id}`: the client's own payment only.
pub async fn get(
    store: &Store,
    client_id: &str,
    payment_id: &str,
    base_url: &str,
) -> Result<Value, ResourceError> {
    match store.payment(payment_id).await? {
        Some(p) if p.client_id == client_id => response(&p, base_url),
        _ => Err(ResourceError::NotFound(format!(
            "no domestic payment {payment_id:?} for this client"
        ))),
    }
}

/// What a funds-confirmation request must be, answered here or upstream alike: it names the
/// token's consent, has a reference of 1 to 35 characters and a positive amount. Returns the
/// request and the amount in minor units.
fn checked_funds_request(
    consent: &ConsentRecord,
    body: &[u8],
) -> Result<(FundsRequest, i64), ResourceError> {
    let request: FundsRequest = serde_json::from_slice(body).map_err(malformed)?;
    same_consent(&request.data.consent_id, consent)?;
    let reference = &request.data.reference;
    if reference.is_empty() || reference.chars().count() > 35 {
        return Err(ResourceError::field(
            FIELD_INVALID,
            "Data.Reference",
            "must be 1 to 35 characters",
        ));
    }
    let amount = &request.data.instructed_amount;
    let minor = parse_minor(&amount.amount)
        .filter(|m| *m > 0)
        .ok_or_else(|| {
            ResourceError::field(
                FIELD_INVALID,
                "Data.InstructedAmount.Amount",
                format!(
                    "{:?} is not a positive amount in whole pence",
                    amount.amount
                ),
            )
        })?;
    Ok((request, minor))
}

/// Before a funds confirmation goes to an upstream core system: every check of
/// [`checked_funds_request`], the one the sandbox bank makes too.
pub fn check_funds_for_upstream(consent: &ConsentRecord, body: &[u8]) -> Result<(), ResourceError> {
    checked_funds_request(consent, body).map(|_| ())
}

/// `POST /funds-confirmations`: whether the consented account could pay this amount now.
pub async fn confirm_funds(
    store: &Store,
    client_id: &str,
    consent: &ConsentRecord,
    body: &[u8],
    base_url: &str,
    now: OffsetDateTime,
) -> Result<Value, ResourceError> {
    let (request, minor) = checked_funds_request(consent, body)?;
    let reference = &request.data.reference;
    let account_id = consent
        .account_ids
        .first()
        .ok_or_else(|| corrupt(&consent.consent_id, "authorised without an account"))?;
    let account = store
        .account(account_id)
        .await?
        .ok_or_else(|| corrupt(&consent.consent_id, "account is gone"))?;
    let amount = &request.data.instructed_amount;
    if amount.currency != account.currency {
        return Err(ResourceError::field(
            UNSUPPORTED_CURRENCY,
            "Data.InstructedAmount.Currency",
            format!("the account is in {}", account.currency),
        ));
    }
    let id = format!("fc-{}", uuid::Uuid::new_v4().simple());
    let stamp = clock::ob_datetime(now);
    let data = json!({
        "FundsConfirmationId": id,
        "ConsentId": consent.consent_id,
        "CreationDateTime": stamp,
        "FundsAvailable": account.balance_minor >= minor,
        "Reference": reference,
        "InstructedAmount": amount,
    });
    store
        .insert_funds_confirmation(
            &id,
            &consent.consent_id,
            client_id,
            &data.to_string(),
            &stamp,
        )
        .await?;
    Ok(json!({
        "Data": data,
        "Links": { "Self": format!("{base_url}{FUNDS_PATH}/{id}") },
        "Meta": {},
    }))
}

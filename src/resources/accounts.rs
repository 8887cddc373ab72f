//! Account information (UK OB Read/Write v3.1 OBReadAccount6, OBReadBalance1,
//! OBReadTransaction6) from the sandbox bank: only the accounts the customer picked, only what
//! the consent's permissions grant, transactions inside the consent's date window, paged.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::ResourceError;
use super::codes::*;
use super::consents::{AccountAccessConsentDetails, Permission};
use super::sandbox::format_minor;
use crate::clock;
use crate::store::{AccountRecord, ConsentRecord, Store, TransactionQuery, TransactionRecord};

/// Transactions per page.
pub const PAGE_SIZE: i64 = 50;
const BASE: &str = "/open-banking/v3.1/aisp";

fn details(consent: &ConsentRecord) -> Result<AccountAccessConsentDetails, ResourceError> {
    serde_json::from_str(&consent.data).map_err(|e| {
        ResourceError::Store(crate::store::StoreError::Corrupt(format!(
            "consent {}: {e}",
            consent.consent_id
        )))
    })
}

fn meta(pages: i64) -> Value {
    json!({ "TotalPages": pages })
}

fn account_json(a: &AccountRecord, detail: bool) -> Value {
    let mut v = json!({
        "AccountId": a.account_id,
        "Status": "Enabled",
        "StatusUpdateDateTime": a.opened_at,
        "Currency": a.currency,
        "AccountType": a.account_type,
        "AccountSubType": a.account_sub_type,
        "Nickname": a.nickname,
        "OpeningDate": a.opened_at,
    });
    if detail {
        v["Account"] = json!([{
            "SchemeName": a.scheme_name,
            "Identification": a.identification,
            "Name": a.name,
        }]);
    }
    v
}

/// The consented account `account_id`, or a refusal that says the consent does not cover it.
pub async fn consented_account(
    store: &Store,
    consent: &ConsentRecord,
    account_id: &str,
) -> Result<AccountRecord, ResourceError> {
    if !consent.account_ids.contains(account_id) {
        return Err(ResourceError::Forbidden {
            reason: "account_not_in_consent",
            code: CONSENT_MISMATCH,
            message: format!(
                "consent {} does not cover account {account_id:?}",
                consent.consent_id
            ),
        });
    }
    store
        .account(account_id)
        .await?
        .filter(|a| Some(&a.owner) == consent.psu.as_ref())
        .ok_or_else(|| ResourceError::NotFound(format!("no account {account_id:?}")))
}

/// `GET /accounts`: the accounts the customer picked.
pub async fn list(
    store: &Store,
    consent: &ConsentRecord,
    base_url: &str,
) -> Result<Value, ResourceError> {
    let d = details(consent)?;
    let detail = d.permissions.contains(&Permission::ReadAccountsDetail);
    let mut accounts = Vec::new();
    for id in consent.account_ids.iter() {
        if let Ok(a) = consented_account(store, consent, id).await {
            accounts.push(account_json(&a, detail));
        }
    }
    Ok(json!({
        "Data": { "Account": accounts },
        "Links": { "Self": format!("{base_url}{BASE}/accounts") },
        "Meta": meta(1),
    }))
}

/// `GET /accounts/{AccountId}`.
pub async fn one(
    store: &Store,
    consent: &ConsentRecord,
    account_id: &str,
    base_url: &str,
) -> Result<Value, ResourceError> {
    let d = details(consent)?;
    let a = consented_account(store, consent, account_id).await?;
    let detail = d.permissions.contains(&Permission::ReadAccountsDetail);
    Ok(json!({
        "Data": { "Account": [account_json(&a, detail)] },
        "Links": { "Self": format!("{base_url}{BASE}/accounts/{account_id}") },
        "Meta": meta(1),
    }))
}

fn signed_amount(minor: i64, currency: &str) -> (Value, &'static str) {
    let indicator = if minor < 0 { "Debit" } else { "Credit" };
    (
        json!({ "Amount": format_minor(minor.abs()), "Currency": currency }),
        indicator,
    )
}

/// `GET /accounts/{AccountId}/balances`.
pub async fn balances(
    store: &Store,
    consent: &ConsentRecord,
    account_id: &str,
    base_url: &str,
) -> Result<Value, ResourceError> {
    let a = consented_account(store, consent, account_id).await?;
    let (amount, indicator) = signed_amount(a.balance_minor, &a.currency);
    let balance = |kind: &str| {
        json!({
            "AccountId": a.account_id,
            "CreditDebitIndicator": indicator,
            "Type": kind,
            "DateTime": a.updated_at,
            "Amount": amount,
        })
    };
    Ok(json!({
        "Data": { "Balance": [balance("InterimAvailable"), balance("InterimBooked")] },
        "Links": { "Self": format!("{base_url}{BASE}/accounts/{account_id}/balances") },
        "Meta": meta(1),
    }))
}

/// Query parameters of `GET /transactions`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct TransactionParams {
    #[serde(rename = "fromBookingDateTime")]
    pub from: Option<String>,
    #[serde(rename = "toBookingDateTime")]
    pub to: Option<String>,
    pub page: Option<i64>,
}

/// An OB `ISODateTime`: with an offset, or without one (then UTC).
fn query_time(v: Option<&str>, name: &str) -> Result<Option<OffsetDateTime>, ResourceError> {
    let Some(s) = v else { return Ok(None) };
    clock::parse(s)
        .or_else(|| clock::parse(&format!("{s}Z")))
        .map(Some)
        .ok_or_else(|| {
            ResourceError::field(
                FIELD_INVALID_DATE,
                name,
                format!("{s:?} is not an ISO 8601 date-time"),
            )
        })
}

fn later(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn earlier(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn transaction_json(t: &TransactionRecord, currency: &str, detail: bool) -> Value {
    let mut v = json!({
        "AccountId": t.account_id,
        "TransactionId": t.transaction_id,
        "TransactionReference": t.reference,
        "CreditDebitIndicator": t.credit_debit,
        "Status": "Booked",
        "BookingDateTime": t.booked_at,
        "ValueDateTime": t.booked_at,
        "Amount": { "Amount": format_minor(t.amount_minor), "Currency": currency },
        "ProprietaryBankTransactionCode": { "Code": t.code, "Issuer": "SandboxBank" },
    });
    if detail {
        let (balance, indicator) = signed_amount(t.balance_after_minor, currency);
        v["TransactionInformation"] = json!(format!("{} {}", t.counterparty, t.description));
        v["MerchantDetails"] = json!({ "MerchantName": t.counterparty });
        v["Balance"] = json!({
            "CreditDebitIndicator": indicator,
            "Type": "InterimBooked",
            "Amount": balance,
        });
    }
    v
}

/// `GET /accounts/{AccountId}/transactions`: the consent's date window intersected with the
/// query's, credits and/or debits as granted, Basic or Detail fields, `page` of [`PAGE_SIZE`].
pub async fn transactions(
    store: &Store,
    consent: &ConsentRecord,
    account_id: &str,
    params: &TransactionParams,
    base_url: &str,
) -> Result<Value, ResourceError> {
    let d = details(consent)?;
    let a = consented_account(store, consent, account_id).await?;
    let has = |p| d.permissions.contains(&p);
    let detail = has(Permission::ReadTransactionsDetail);
    let from = later(
        d.transaction_from_date_time
            .as_deref()
            .and_then(clock::parse),
        query_time(params.from.as_deref(), "fromBookingDateTime")?,
    );
    let to = earlier(
        d.transaction_to_date_time.as_deref().and_then(clock::parse),
        query_time(params.to.as_deref(), "toBookingDateTime")?,
    );
    let page = params.page.unwrap_or(1);
    if page < 1 {
        return Err(ResourceError::field(
            FIELD_INVALID,
            "page",
            "page numbers start at 1",
        ));
    }
    let (rows, total) = store
        .transactions(&TransactionQuery {
            account_id: a.account_id.clone(),
            from: from.map(clock::ob_datetime),
            to: to.map(clock::ob_datetime),
            credits: has(Permission::ReadTransactionsCredits),
            debits: has(Permission::ReadTransactionsDebits),
            offset: (page - 1).saturating_mul(PAGE_SIZE),
            limit: PAGE_SIZE,
        })
        .await?;
    let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let link = |p: i64| {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(f) = &params.from {
            query.push(("fromBookingDateTime", f.clone()));
        }
        if let Some(t) = &params.to {
            query.push(("toBookingDateTime", t.clone()));
        }
        query.push(("page", p.to_string()));
        format!(
            "{base_url}{BASE}/accounts/{account_id}/transactions?{}",
            serde_urlencoded::to_string(&query).unwrap_or_default()
        )
    };
    let mut links = json!({ "Self": link(page) });
    if page < pages {
        links["Next"] = json!(link(page + 1));
        links["Last"] = json!(link(pages));
    }
    if page > 1 {
        links["Prev"] = json!(link(page - 1));
        links["First"] = json!(link(1));
    }
    let mut meta = meta(pages);
    if let Some(f) = from {
        meta["FirstAvailableDateTime"] = json!(clock::ob_datetime(f));
    }
    if let Some(t) = to {
        meta["LastAvailableDateTime"] = json!(clock::ob_datetime(t));
    }
    Ok(json!({
        "Data": {
            "Transaction": rows
                .iter()
                .map(|t| transaction_json(t, &a.currency, detail))
                .collect::<Vec<_>>(),
        },
        "Links": links,
        "Meta": meta,
    }))
}

/// The account reads an upstream core system can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountRead {
    Accounts,
    Balances,
    Transactions,
}

/// Fields of OBTransaction6 that only ReadTransactionsDetail grants (UK OB Read/Write v3.1,
/// "Permission codes": Basic excludes them).
const TRANSACTION_DETAIL_FIELDS: &[&str] = &[
    "TransactionInformation",
    "Balance",
    "MerchantDetails",
    "CreditorAgent",
    "CreditorAccount",
    "DebtorAgent",
    "DebtorAccount",
];
/// Fields of OBAccount6 that only ReadAccountsDetail grants.
const ACCOUNT_DETAIL_FIELDS: &[&str] = &["Account", "Servicer"];

/// Cuts an upstream core system's answer to an account read down to what the consent grants,
/// whatever the upstream returned: only the consented accounts (and only `account_id` when the
/// path names one), only transactions inside the consent's window and of the granted
/// directions, and no Detail fields without the Detail permission. The answer is rebuilt from
/// the entries that pass; one the gateway cannot check is refused rather than relayed.
pub fn restrict_upstream(
    consent: &ConsentRecord,
    read: AccountRead,
    account_id: Option<&str>,
    body: &[u8],
) -> Result<Value, ResourceError> {
    let d = details(consent)?;
    let has = |p| d.permissions.contains(&p);
    let unreadable = |what: &str| {
        ResourceError::UpstreamUnreadable(format!(
            "the upstream's answer {what}; it cannot be checked against consent {}",
            consent.consent_id
        ))
    };
    let mut value: Value = serde_json::from_slice(body).map_err(|_| unreadable("is not JSON"))?;
    let key = match read {
        AccountRead::Accounts => "Account",
        AccountRead::Balances => "Balance",
        AccountRead::Transactions => "Transaction",
    };
    let entries = value
        .get_mut("Data")
        .and_then(|d| d.get_mut(key))
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .ok_or_else(|| unreadable(&format!("has no Data.{key} list")))?;
    let consented = &consent.account_ids;
    let allowed = |entry: &Value| {
        entry["AccountId"]
            .as_str()
            .is_some_and(|id| consented.contains(id) && account_id.is_none_or(|path| path == id))
    };
    let from = d
        .transaction_from_date_time
        .as_deref()
        .and_then(clock::parse);
    let to = d.transaction_to_date_time.as_deref().and_then(clock::parse);
    let in_window = |entry: &Value| {
        entry["BookingDateTime"]
            .as_str()
            .and_then(|s| clock::parse(s).or_else(|| clock::parse(&format!("{s}Z"))))
            .is_some_and(|at| from.is_none_or(|f| at >= f) && to.is_none_or(|t| at <= t))
    };
    let direction_granted = |entry: &Value| match entry["CreditDebitIndicator"].as_str() {
        Some("Credit") => has(Permission::ReadTransactionsCredits),
        Some("Debit") => has(Permission::ReadTransactionsDebits),
        _ => false,
    };
    let (detail, detail_fields) = match read {
        AccountRead::Accounts => (has(Permission::ReadAccountsDetail), ACCOUNT_DETAIL_FIELDS),
        AccountRead::Balances => (true, &[][..]),
        AccountRead::Transactions => (
            has(Permission::ReadTransactionsDetail),
            TRANSACTION_DETAIL_FIELDS,
        ),
    };
    let kept: Vec<Value> = entries
        .into_iter()
        .filter(|e| e.is_object() && allowed(e))
        .filter(|e| read != AccountRead::Transactions || (in_window(e) && direction_granted(e)))
        .map(|mut e| {
            if !detail && let Some(fields) = e.as_object_mut() {
                for f in detail_fields {
                    fields.remove(*f);
                }
            }
            e
        })
        .collect();
    value["Data"] = json!({ key: kept });
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::{AccountIds, Kind, Status};

    fn consent(permissions: &str) -> ConsentRecord {
        ConsentRecord {
            consent_id: "aac-1".into(),
            kind: Kind::AccountAccess,
            client_id: "tpp".into(),
            status: Status::Authorised,
            data: format!(r#"{{"Permissions":{permissions}}}"#),
            risk: "{}".into(),
            created_at: String::new(),
            status_updated_at: String::new(),
            idempotency_key: None,
            request_hash: None,
            psu: Some("alice".into()),
            account_ids: AccountIds(vec!["acc-1".into()]),
        }
    }

    #[test]
    fn an_upstream_answer_that_cannot_be_checked_is_refused_not_relayed() {
        let c = consent(r#"["ReadAccountsBasic"]"#);
        for body in [
            &b"<html>accounts</html>"[..],
            br#"{"Data":{}}"#,
            br#"{"Data":{"Account":{}}}"#,
        ] {
            assert!(
                matches!(
                    restrict_upstream(&c, AccountRead::Accounts, None, body),
                    Err(ResourceError::UpstreamUnreadable(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let kept = restrict_upstream(
            &c,
            AccountRead::Accounts,
            None,
            br#"{"Data":{"Account":[{"AccountId":"acc-1","Account":[{}]},{"AccountId":"acc-2"},"x"]}}"#,
        );
        assert!(
            matches!(&kept, Ok(v) if v["Data"]["Account"] == json!([{"AccountId": "acc-1"}])),
            "{kept:?}"
        );
    }
}

//! The consents' wire types, as UK Open Banking Read/Write API v3.1 spells them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Links {
    #[serde(rename = "Self")]
    pub self_link: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Meta {
    pub total_pages: u32,
}

/// The response envelope of every consent (`Data`, `Risk`, `Links`, `Meta`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ConsentResponse<D: ToSchema> {
    pub data: ConsentData<D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub risk: Option<Value>,
    pub links: Links,
    pub meta: Meta,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ConsentData<D: ToSchema> {
    pub consent_id: String,
    pub creation_date_time: String,
    pub status: String,
    pub status_update_date_time: String,
    #[serde(flatten)]
    pub details: D,
}

/// OBReadConsent1
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AccountAccessConsentRequest {
    pub data: AccountAccessConsentDetails,
    #[schema(value_type = Object)]
    pub risk: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AccountAccessConsentDetails {
    pub permissions: Vec<Permission>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_from_date_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_to_date_time: Option<String>,
}

/// OBExternalPermissions1Code
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Permission {
    ReadAccountsBasic,
    ReadAccountsDetail,
    ReadBalances,
    ReadBeneficiariesBasic,
    ReadBeneficiariesDetail,
    ReadDirectDebits,
    ReadOffers,
    ReadPAN,
    ReadParty,
    ReadPartyPSU,
    ReadProducts,
    ReadScheduledPaymentsBasic,
    ReadScheduledPaymentsDetail,
    ReadStandingOrdersBasic,
    ReadStandingOrdersDetail,
    ReadStatementsBasic,
    ReadStatementsDetail,
    ReadTransactionsBasic,
    ReadTransactionsCredits,
    ReadTransactionsDebits,
    ReadTransactionsDetail,
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use serde::de::IntoDeserializer;
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            s.into_deserializer();
        Permission::deserialize(de).map_err(|_| format!("unknown permission {s:?}"))
    }
}

impl Permission {
    /// What the customer is shown on the consent page.
    pub fn describe(self) -> &'static str {
        use Permission::*;
        match self {
            ReadAccountsBasic => "Your account names and types",
            ReadAccountsDetail => "Your account names, types, sort codes and account numbers",
            ReadBalances => "Your account balances",
            ReadBeneficiariesBasic | ReadBeneficiariesDetail => "Your saved payees",
            ReadDirectDebits => "Your Direct Debits",
            ReadOffers => "Offers on your accounts",
            ReadPAN => "Your full card numbers",
            ReadParty | ReadPartyPSU => "Your name and contact details",
            ReadProducts => "The products your accounts are",
            ReadScheduledPaymentsBasic | ReadScheduledPaymentsDetail => "Your scheduled payments",
            ReadStandingOrdersBasic | ReadStandingOrdersDetail => "Your standing orders",
            ReadStatementsBasic | ReadStatementsDetail => "Your statements",
            ReadTransactionsBasic => "Your transactions (amounts and dates)",
            ReadTransactionsDetail => "Your transactions, with payee and description details",
            ReadTransactionsCredits => "Money coming into your accounts",
            ReadTransactionsDebits => "Money going out of your accounts",
        }
    }
}

/// OBWriteDomesticConsent4
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DomesticPaymentConsentRequest {
    pub data: DomesticPaymentConsentDetails,
    #[schema(value_type = Object)]
    pub risk: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DomesticPaymentConsentDetails {
    pub initiation: DomesticInitiation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub authorisation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "SCASupportData")]
    #[schema(value_type = Option<Object>)]
    pub sca_support_data: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DomesticInitiation {
    pub instruction_identification: String,
    pub end_to_end_identification: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_instrument: Option<String>,
    pub instructed_amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debtor_account: Option<CashAccount>,
    pub creditor_account: CashAccount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub creditor_postal_address: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remittance_information: Option<RemittanceInformation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub supplementary_data: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Amount {
    /// `^\d{1,13}$|^\d{1,13}\.\d{1,5}$`
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CashAccount {
    pub scheme_name: String,
    pub identification: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_identification: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RemittanceInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unstructured: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// OBFundsConfirmationConsent1
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FundsConfirmationConsentRequest {
    pub data: FundsConfirmationConsentDetails,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FundsConfirmationConsentDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date_time: Option<String>,
    pub debtor_account: CashAccount,
}

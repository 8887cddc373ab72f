//! What the SQLite and PostgreSQL backends share: the statements that read the same in both
//! dialects, written once and expanded into each backend's `impl` by [`shared_store_methods`].
//! Each backend supplies `Db` (its sqlx database), `CLIENT_SELECT` and `TRANSITION_CONSENT`
//! (the statements whose dialects differ) and `begin_audit` (a transaction holding the audit
//! table's write lock).

use std::str::FromStr;

use super::StoreError;
use crate::registry::{AuthMethod, Client, ClientId, ClientStatus, Role};

#[derive(sqlx::FromRow)]
pub(super) struct ClientRow {
    client_id: String,
    name: String,
    status: String,
    roles: String,
    auth_method: String,
    subject_dn: Option<String>,
    redirect_uris: String,
    jwks: Option<String>,
    created_at: String,
    thumbprints: String,
    issuers: String,
}

impl ClientRow {
    pub(super) fn into_client(self) -> Result<Client, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("client {}: {e}", self.client_id));
        Ok(Client {
            client_id: ClientId::from_str(&self.client_id).map_err(corrupt)?,
            name: self.name.clone(),
            status: ClientStatus::from_str(&self.status).map_err(corrupt)?,
            roles: Role::parse_list(&self.roles).map_err(corrupt)?,
            auth_method: AuthMethod::from_str(&self.auth_method).map_err(corrupt)?,
            subject_dn: self.subject_dn.clone(),
            cert_thumbprints: list(&self.thumbprints, ','),
            cert_issuers: list(&self.issuers, ISSUER_SEPARATOR),
            redirect_uris: serde_json::from_str(&self.redirect_uris)
                .map_err(|e| corrupt(e.to_string()))?,
            jwks: self.jwks.clone(),
            created_at: self.created_at.clone(),
        })
    }
}

/// Separates issuer DNs in one column: the ASCII unit separator, which DNs do not contain.
pub(super) const ISSUER_SEPARATOR: char = '\u{1f}';

/// A `group_concat` column as a sorted list without duplicates.
fn list(column: &str, separator: char) -> Vec<String> {
    let mut items: Vec<String> = column
        .split(separator)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .collect();
    items.sort();
    items.dedup();
    items
}

/// Whether `key` could be stored at all: PostgreSQL text cannot hold NUL, so no stored key
/// contains one and a lookup by such a key finds nothing (instead of a database error), on
/// both backends alike.
pub fn storable(key: &str) -> bool {
    !key.contains('\0')
}

/// The storage methods both backends implement with the same SQL.
macro_rules! shared_store_methods {
    () => {
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- clients ----

    pub async fn insert_client(&self, new: &NewClient, now: &str) -> Result<(), StoreError> {
        let c = &new.client;
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM clients WHERE client_id = $1")
            .bind(c.client_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!("client {}", c.client_id)));
        }
        let taken = sqlx::query("SELECT client_id FROM client_certificates WHERE thumbprint = $1")
            .bind(&new.cert.thumbprint)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = taken {
            let owner: String = row.try_get("client_id")?;
            return Err(StoreError::Conflict(format!(
                "certificate {} (registered to client {owner})",
                new.cert.thumbprint
            )));
        }
        sqlx::query(
            "INSERT INTO clients (client_id, name, status, roles, auth_method, subject_dn, \
             redirect_uris, jwks, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $8, $8)",
        )
        .bind(c.client_id.as_str())
        .bind(&c.name)
        .bind(c.status.as_str())
        .bind(Role::join(&c.roles))
        .bind(c.auth_method.as_str())
        .bind(&c.subject_dn)
        .bind(
            serde_json::to_string(&c.redirect_uris)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        )
        .bind(now)
        .bind(&c.jwks)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO client_certificates (thumbprint, client_id, subject, issuer, serial, \
             not_after, added_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&new.cert.thumbprint)
        .bind(c.client_id.as_str())
        .bind(&new.cert.subject)
        .bind(&new.cert.issuer)
        .bind(&new.cert.serial)
        .bind(new.cert.not_after)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        if !crate::store::sql::storable(id.as_str()) {
            return Ok(None);
        }
        let sql = format!("{CLIENT_SELECT} WHERE c.client_id = $1");
        sqlx::query_as::<_, ClientRow>(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(ClientRow::into_client)
            .transpose()
    }

    pub async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let sql = format!("{CLIENT_SELECT} ORDER BY c.client_id");
        sqlx::query_as::<_, ClientRow>(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(ClientRow::into_client)
            .collect()
    }

    /// Returns false when there is no such client.
    pub async fn set_client_status(
        &self,
        id: &ClientId,
        status: ClientStatus,
        now: &str,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE clients SET status = $1, updated_at = $2 WHERE client_id = $3")
                .bind(status.as_str())
                .bind(now)
                .bind(id.as_str())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Active certificates of clients that authenticate with `self_signed_tls_client_auth`.
    pub async fn self_signed_thumbprints(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT cc.thumbprint FROM client_certificates cc JOIN clients c USING (client_id) \
             WHERE c.auth_method = 'self_signed_tls_client_auth' AND cc.status = 'active'",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>("thumbprint")
                    .map_err(StoreError::from)
            })
            .collect()
    }

    /// Active certificates with their owners, for the certificate-expiry metric.
    pub async fn client_certificates(&self) -> Result<Vec<(String, CertRecord)>, StoreError> {
        let rows = sqlx::query(
            "SELECT client_id, thumbprint, subject, issuer, serial, not_after \
             FROM client_certificates WHERE status = 'active'",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("client_id")?,
                    CertRecord {
                        thumbprint: r.try_get("thumbprint")?,
                        subject: r.try_get("subject")?,
                        issuer: r.try_get("issuer")?,
                        serial: r.try_get("serial")?,
                        not_after: r.try_get("not_after")?,
                    },
                ))
            })
            .collect()
    }

    // ---- consents ----

    pub async fn insert_consent(&self, c: &ConsentRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO consents (consent_id, kind, client_id, status, data, risk, created_at, \
             status_updated_at, idempotency_key, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&c.consent_id)
        .bind(c.kind.as_str())
        .bind(&c.client_id)
        .bind(c.status.as_str())
        .bind(&c.data)
        .bind(&c.risk)
        .bind(&c.created_at)
        .bind(&c.status_updated_at)
        .bind(&c.idempotency_key)
        .bind(&c.request_hash)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("consent with idempotency key {:?}", c.idempotency_key),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn consent(&self, id: &str) -> Result<Option<ConsentRecord>, StoreError> {
        if !crate::store::sql::storable(id) {
            return Ok(None);
        }
        Ok(
            sqlx::query_as::<_, ConsentRecord>("SELECT * FROM consents WHERE consent_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn consent_by_idempotency_key(
        &self,
        client_id: &str,
        kind: Kind,
        key: &str,
    ) -> Result<Option<ConsentRecord>, StoreError> {
        if !(crate::store::sql::storable(client_id) && crate::store::sql::storable(key)) {
            return Ok(None);
        }
        Ok(sqlx::query_as::<_, ConsentRecord>(
            "SELECT * FROM consents WHERE client_id = $1 AND kind = $2 AND idempotency_key = $3",
        )
        .bind(client_id)
        .bind(kind.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn set_consent_status(
        &self,
        id: &str,
        status: Status,
        now: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE consents SET status = $1, status_updated_at = $2 WHERE consent_id = $3",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a consent from one of `from` to `to`; false when it was in no such status (so two
    /// racing transitions cannot both succeed).
    pub async fn transition_consent(
        &self,
        id: &str,
        from: &[Status],
        to: Status,
        now: &str,
    ) -> Result<bool, StoreError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let from = serde_json::to_string(&from).unwrap_or_default();
        let done = sqlx::query(
            TRANSITION_CONSENT,
        )
        .bind(to.as_str())
        .bind(now)
        .bind(id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The customer's approval: `AwaitingAuthorisation` → `Authorised`, for these accounts.
    pub async fn authorise_consent(
        &self,
        id: &str,
        psu: &str,
        account_ids: &[String],
        now: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE consents SET status = 'Authorised', psu = $1, account_ids = $2, \
             status_updated_at = $3 WHERE consent_id = $4 AND status = 'AwaitingAuthorisation'",
        )
        .bind(psu)
        .bind(serde_json::to_string(account_ids).unwrap_or_else(|_| "[]".into()))
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Consents a customer has authorised, newest first.
    pub async fn consents_of_psu(&self, psu: &str) -> Result<Vec<ConsentRecord>, StoreError> {
        Ok(sqlx::query_as::<_, ConsentRecord>(
            "SELECT * FROM consents WHERE psu = $1 ORDER BY status_updated_at DESC, consent_id",
        )
        .bind(psu)
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- sandbox bank ----

    /// Seeds the sandbox bank unless it already has customers; true when it seeded.
    pub async fn seed_sandbox(&self, seed: &SandboxSeed) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Ok(false);
        }
        for c in &seed.customers {
            sqlx::query(
                "INSERT INTO customers (username, display_name, password_hash) VALUES ($1, $2, $3)",
            )
            .bind(&c.username)
            .bind(&c.display_name)
            .bind(&c.password_hash)
            .execute(&mut *tx)
            .await?;
        }
        for a in &seed.accounts {
            sqlx::query(
                "INSERT INTO accounts (account_id, owner, currency, account_type, \
                 account_sub_type, nickname, scheme_name, identification, name, opened_at, \
                 balance_minor, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&a.account_id)
            .bind(&a.owner)
            .bind(&a.currency)
            .bind(&a.account_type)
            .bind(&a.account_sub_type)
            .bind(&a.nickname)
            .bind(&a.scheme_name)
            .bind(&a.identification)
            .bind(&a.name)
            .bind(&a.opened_at)
            .bind(a.balance_minor)
            .bind(&a.updated_at)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in seed.transactions.chunks(256) {
            let mut insert = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO transactions (transaction_id, account_id, booked_at, amount_minor, \
                 credit_debit, code, reference, description, counterparty, balance_after_minor) ",
            );
            insert.push_values(chunk, |mut row, t| {
                row.push_bind(&t.transaction_id)
                    .push_bind(&t.account_id)
                    .push_bind(&t.booked_at)
                    .push_bind(t.amount_minor)
                    .push_bind(&t.credit_debit)
                    .push_bind(&t.code)
                    .push_bind(&t.reference)
                    .push_bind(&t.description)
                    .push_bind(&t.counterparty)
                    .push_bind(t.balance_after_minor);
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn customer(&self, username: &str) -> Result<Option<CustomerRecord>, StoreError> {
        if !crate::store::sql::storable(username) {
            return Ok(None);
        }
        Ok(
            sqlx::query_as::<_, CustomerRecord>("SELECT * FROM customers WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn accounts_of(&self, owner: &str) -> Result<Vec<AccountRecord>, StoreError> {
        Ok(sqlx::query_as::<_, AccountRecord>(
            "SELECT * FROM accounts WHERE owner = $1 ORDER BY opened_at, account_id",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn account(&self, id: &str) -> Result<Option<AccountRecord>, StoreError> {
        if !crate::store::sql::storable(id) {
            return Ok(None);
        }
        Ok(
            sqlx::query_as::<_, AccountRecord>("SELECT * FROM accounts WHERE account_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// One page of an account's transactions, oldest first, and how many match in all.
    pub async fn transactions(
        &self,
        q: &TransactionQuery,
    ) -> Result<(Vec<TransactionRecord>, i64), StoreError> {
        const FILTER: &str = "account_id = $1 \
             AND (CAST($2 AS TEXT) IS NULL OR booked_at >= CAST($2 AS TEXT)) \
             AND (CAST($3 AS TEXT) IS NULL OR booked_at <= CAST($3 AS TEXT)) \
             AND ((credit_debit = 'Credit' AND $4) OR (credit_debit = 'Debit' AND $5))";
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM transactions WHERE {FILTER}"
        )))
        .bind(&q.account_id)
        .bind(&q.from)
        .bind(&q.to)
        .bind(q.credits)
        .bind(q.debits)
        .fetch_one(&self.pool)
        .await?;
        let page = sqlx::query_as::<_, TransactionRecord>(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM transactions WHERE {FILTER} \
             ORDER BY booked_at, transaction_id LIMIT $6 OFFSET $7"
        )))
        .bind(&q.account_id)
        .bind(&q.from)
        .bind(&q.to)
        .bind(q.credits)
        .bind(q.debits)
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((page, total))
    }

    // ---- authorization grants and refresh tokens ----

    pub async fn insert_grant(
        &self,
        g: &GrantRecord,
        refresh_hash: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO grants (grant_id, client_id, cert_thumbprint, consent_id, scope, status, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&g.grant_id)
        .bind(&g.client_id)
        .bind(&g.cert_thumbprint)
        .bind(&g.consent_id)
        .bind(&g.scope)
        .bind(&g.status)
        .bind(g.created_at)
        .bind(g.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, grant_id, status, created_at) \
             VALUES ($1, $2, 'active', $3)",
        )
        .bind(refresh_hash)
        .bind(&g.grant_id)
        .bind(g.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn refresh_lookup(&self, hash: &str) -> Result<RefreshLookup, StoreError> {
        let row = sqlx::query("SELECT grant_id, status FROM refresh_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(RefreshLookup::Unknown);
        };
        let grant_id: String = row.try_get("grant_id")?;
        let status: String = row.try_get("status")?;
        let grant = sqlx::query_as::<_, GrantRecord>("SELECT * FROM grants WHERE grant_id = $1")
            .bind(&grant_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("refresh token of unknown grant {grant_id}"))
            })?;
        Ok(if status == "active" {
            RefreshLookup::Active(grant)
        } else {
            RefreshLookup::RotatedOut(grant)
        })
    }

    /// Replaces the grant's current refresh token; false when `old` was not current any more
    /// (a concurrent rotation won).
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        grant_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE refresh_tokens SET status = 'rotated' \
             WHERE token_hash = $1 AND grant_id = $2 AND status = 'active'",
        )
        .bind(old_hash)
        .bind(grant_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, grant_id, status, created_at) \
             VALUES ($1, $2, 'active', $3)",
        )
        .bind(new_hash)
        .bind(grant_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Remembers an access token issued from a grant, so revoking the grant can revoke it.
    pub async fn add_grant_token(
        &self,
        grant_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO grant_access_tokens (jti, grant_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(jti)
        .bind(grant_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes a grant (its refresh tokens die with it) and records the revocation of every
    /// unexpired access token issued from it; returns those `(jti, expires_at)`.
    pub async fn revoke_grant(
        &self,
        grant_id: &str,
        now: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE grants SET status = 'revoked' WHERE grant_id = $1")
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT g.jti, g.expires_at, gr.client_id FROM grant_access_tokens g \
             JOIN grants gr ON gr.grant_id = g.grant_id \
             WHERE g.grant_id = $1 AND g.expires_at > $2",
        )
        .bind(grant_id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut live = Vec::with_capacity(rows.len());
        for r in &rows {
            let (jti, exp, client): (String, i64, String) = (
                r.try_get("jti")?,
                r.try_get("expires_at")?,
                r.try_get("client_id")?,
            );
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, client_id, expires_at, revoked_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
            )
            .bind(&jti)
            .bind(&client)
            .bind(exp)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            live.push((jti, exp));
        }
        tx.commit().await?;
        Ok(live)
    }

    // ---- payments and funds confirmations ----

    /// Records a payment atomically: the consent goes `Authorised` → `Consumed` (so it pays
    /// once), the debtor account is debited, the transaction and the payment are written.
    pub async fn create_payment(
        &self,
        p: &PaymentRecord,
        t: &TransactionRecord,
    ) -> Result<PaymentRecord, PaymentRefused> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let consumed = sqlx::query(
            "UPDATE consents SET status = 'Consumed', status_updated_at = $1 \
             WHERE consent_id = $2 AND status = 'Authorised'",
        )
        .bind(&p.created_at)
        .bind(&p.consent_id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if consumed.rows_affected() != 1 {
            return Err(PaymentRefused::ConsentNotAuthorised(p.consent_id.clone()));
        }
        let balance: i64 = sqlx::query_scalar(
            "UPDATE accounts SET balance_minor = balance_minor - $1, updated_at = $2 \
             WHERE account_id = $3 RETURNING balance_minor",
        )
        .bind(t.amount_minor)
        .bind(&p.created_at)
        .bind(&t.account_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        sqlx::query(
            "INSERT INTO transactions (transaction_id, account_id, booked_at, amount_minor, \
             credit_debit, code, reference, description, counterparty, balance_after_minor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&t.transaction_id)
        .bind(&t.account_id)
        .bind(&t.booked_at)
        .bind(t.amount_minor)
        .bind(&t.credit_debit)
        .bind(&t.code)
        .bind(&t.reference)
        .bind(&t.description)
        .bind(&t.counterparty)
        .bind(balance)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let inserted = sqlx::query(
            "INSERT INTO payments (payment_id, consent_id, client_id, account_id, transaction_id, \
             status, data, created_at, status_updated_at, idempotency_key, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&p.payment_id)
        .bind(&p.consent_id)
        .bind(&p.client_id)
        .bind(&p.account_id)
        .bind(&p.transaction_id)
        .bind(&p.status)
        .bind(&p.data)
        .bind(&p.created_at)
        .bind(&p.status_updated_at)
        .bind(&p.idempotency_key)
        .bind(&p.request_hash)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(PaymentRefused::IdempotencyKeyTaken);
            }
            Err(e) => return Err(StoreError::from(e).into()),
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(p.clone())
    }

    pub async fn payment(&self, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        if !crate::store::sql::storable(id) {
            return Ok(None);
        }
        Ok(
            sqlx::query_as::<_, PaymentRecord>("SELECT * FROM payments WHERE payment_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn payment_by_idempotency_key(
        &self,
        client_id: &str,
        key: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        if !(crate::store::sql::storable(client_id) && crate::store::sql::storable(key)) {
            return Ok(None);
        }
        Ok(sqlx::query_as::<_, PaymentRecord>(
            "SELECT * FROM payments WHERE client_id = $1 AND idempotency_key = $2",
        )
        .bind(client_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn insert_funds_confirmation(
        &self,
        id: &str,
        consent_id: &str,
        client_id: &str,
        data: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO funds_confirmations (confirmation_id, consent_id, client_id, data, \
             created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(consent_id)
        .bind(client_id)
        .bind(data)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- token revocations ----

    pub async fn insert_revocation(
        &self,
        jti: &str,
        client_id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, client_id, expires_at, revoked_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(client_id)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revocations of tokens that have not expired yet: `(jti, expires_at)`.
    pub async fn live_revocations(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("jti")?, r.try_get("expires_at")?)))
            .collect()
    }

    // ---- audit log ----

    /// Appends a batch of events to the chain in one write transaction: the head is read under
    /// the database's write lock, so several processes writing to one database keep one
    /// unbroken chain. `chain` turns the head `(seq, hash)` (none in an empty log) into the
    /// batch's records.
    pub async fn append_audit_chained<E>(
        &self,
        chain: impl FnOnce(Option<(i64, String)>) -> Result<Vec<AuditRecord>, E>,
    ) -> Result<Result<Vec<AuditRecord>, E>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let appended = Self::append_audit_on(&mut conn, chain).await;
        if appended.is_err() {
            // A failed statement or COMMIT can leave the connection inside its transaction
            // (SQLite keeps it open after SQLITE_FULL at COMMIT), and sqlx then refuses every
            // later BEGIN on it: it is closed, not handed back to the pool.
            conn.close_on_drop();
        }
        appended
    }

    async fn append_audit_on<E>(
        conn: &mut sqlx::pool::PoolConnection<Db>,
        chain: impl FnOnce(Option<(i64, String)>) -> Result<Vec<AuditRecord>, E>,
    ) -> Result<Result<Vec<AuditRecord>, E>, StoreError> {
        let mut tx = Self::begin_audit(conn).await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let head = match head {
            Some(r) => Some((r.try_get("seq")?, r.try_get("hash")?)),
            None => None,
        };
        let batch = match chain(head) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        if batch.is_empty() {
            return Ok(Ok(batch));
        }
        let mut insert = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO audit_events (seq, ts, interaction_id, peer_ip, client_id, \
             cert_thumbprint, cert_subject, cert_serial, method, route, status, outcome, reason, \
             token_jti, consent_id, psu, latency_us, prev_hash, hash, event_id) ",
        );
        insert.push_values(&batch, |mut row, e| {
            row.push_bind(e.seq)
                .push_bind(&e.ts)
                .push_bind(&e.interaction_id)
                .push_bind(&e.peer_ip)
                .push_bind(&e.client_id)
                .push_bind(&e.cert_thumbprint)
                .push_bind(&e.cert_subject)
                .push_bind(&e.cert_serial)
                .push_bind(&e.method)
                .push_bind(&e.route)
                .push_bind(e.status)
                .push_bind(&e.outcome)
                .push_bind(&e.reason)
                .push_bind(&e.token_jti)
                .push_bind(&e.consent_id)
                .push_bind(&e.psu)
                .push_bind(e.latency_us)
                .push_bind(&e.prev_hash)
                .push_bind(&e.hash)
                .push_bind(&e.event_id);
        });
        insert.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Ok(batch))
    }

    /// The newest event's `(seq, hash)`, where the chain continues.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("seq")?, r.try_get("hash")?)))
            .transpose()
    }

    /// Which of these event ids are already in the log.
    pub async fn audit_event_ids_present(
        &self,
        ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut present = Vec::new();
        for chunk in ids.chunks(500) {
            let mut q = sqlx::QueryBuilder::<Db>::new(
                "SELECT event_id FROM audit_events WHERE event_id IN (",
            );
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            q.push(")");
            let rows: Vec<(String,)> = q.build_query_as().fetch_all(&self.pool).await?;
            present.extend(rows.into_iter().map(|(id,)| id));
        }
        Ok(present)
    }

    /// Events in `seq` order after `q.after_seq`, within the time range, at most `q.limit`.
    pub async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(sqlx::query_as::<_, AuditRecord>(
            "SELECT * FROM audit_events WHERE seq > $1 \
             AND (CAST($2 AS TEXT) IS NULL OR ts >= CAST($2 AS TEXT)) \
             AND (CAST($3 AS TEXT) IS NULL OR ts < CAST($3 AS TEXT)) \
             ORDER BY seq LIMIT $4",
        )
        .bind(q.after_seq)
        .bind(&q.from)
        .bind(&q.to)
        .bind(q.limit)
        .fetch_all(&self.pool)
        .await?)
    }
    };
}

pub(super) use shared_store_methods;

//! The client registry: TPP clients and the certificates they authenticate with.

use std::str::FromStr;

use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::sql::{Dialect, ISSUER_SEPARATOR, SqlStore, storable};
use super::{CertRecord, Store, StoreError};
use crate::registry::{
    AuthMethod, CertStatus, Client, ClientCert, ClientId, ClientStatus, MAX_ACTIVE_CERTS, Role,
};

/// What adding a certificate to a client's set did.
#[derive(Debug, PartialEq, Eq)]
pub enum CertAdded {
    Added,
    NoSuchClient,
    /// The client already holds [`MAX_ACTIVE_CERTS`] active certificates.
    SetFull,
}

/// What revoking a certificate of a client's set did.
#[derive(Debug)]
pub enum CertRevoked {
    /// Revoked by this call.
    Now(CertRecord),
    /// It was revoked before.
    Already(CertRecord),
    /// The client has no such certificate.
    NotFound,
}

/// A client to register, with the certificate it registered over.
pub struct NewClient {
    pub client: Client,
    pub cert: CertRecord,
}

#[derive(sqlx::FromRow)]
struct ClientRow {
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
    issuer_keys: String,
}

impl ClientRow {
    fn into_client(self) -> Result<Client, StoreError> {
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
            cert_issuer_keys: list(&self.issuer_keys, ','),
            redirect_uris: serde_json::from_str(&self.redirect_uris)
                .map_err(|e| corrupt(e.to_string()))?,
            jwks: self.jwks.clone(),
            created_at: self.created_at.clone(),
        })
    }
}

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

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
{
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
             not_after, added_at, issuer_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&new.cert.thumbprint)
        .bind(c.client_id.as_str())
        .bind(&new.cert.subject)
        .bind(&new.cert.issuer)
        .bind(&new.cert.serial)
        .bind(new.cert.not_after)
        .bind(now)
        .bind(&new.cert.issuer_key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        if !storable(id.as_str()) {
            return Ok(None);
        }
        let sql = format!("{} WHERE c.client_id = $1", DB::CLIENT_SELECT);
        sqlx::query_as::<_, ClientRow>(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(ClientRow::into_client)
            .transpose()
    }

    pub async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let sql = format!("{} ORDER BY c.client_id", DB::CLIENT_SELECT);
        sqlx::query_as::<_, ClientRow>(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(ClientRow::into_client)
            .collect()
    }

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

    pub async fn client_certificates(&self) -> Result<Vec<(String, CertRecord)>, StoreError> {
        let rows = sqlx::query(
            "SELECT client_id, thumbprint, subject, issuer, serial, not_after, issuer_key \
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
                        issuer_key: r.try_get("issuer_key")?,
                    },
                ))
            })
            .collect()
    }

    pub async fn client_certificates_of(
        &self,
        client_id: &ClientId,
    ) -> Result<Vec<ClientCert>, StoreError> {
        let rows = sqlx::query(
            "SELECT thumbprint, subject, issuer, serial, not_after, status, added_at, issuer_key \
             FROM client_certificates WHERE client_id = $1 ORDER BY added_at, thumbprint",
        )
        .bind(client_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                Ok(ClientCert {
                    record: CertRecord {
                        thumbprint: r.try_get("thumbprint")?,
                        subject: r.try_get("subject")?,
                        issuer: r.try_get("issuer")?,
                        serial: r.try_get("serial")?,
                        not_after: r.try_get("not_after")?,
                        issuer_key: r.try_get("issuer_key")?,
                    },
                    status: CertStatus::from_str(&status).map_err(StoreError::Corrupt)?,
                    added_at: r.try_get("added_at")?,
                })
            })
            .collect()
    }

    pub async fn add_client_certificate(
        &self,
        client_id: &ClientId,
        cert: &CertRecord,
        now: &str,
    ) -> Result<CertAdded, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Writing the client row first holds it (a row lock on PostgreSQL, the write lock on
        // SQLite), so two additions at once cannot both find room for a fifth certificate.
        let client = sqlx::query("UPDATE clients SET updated_at = $1 WHERE client_id = $2")
            .bind(now)
            .bind(client_id.as_str())
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&client) != 1 {
            return Ok(CertAdded::NoSuchClient);
        }
        let taken = sqlx::query("SELECT client_id FROM client_certificates WHERE thumbprint = $1")
            .bind(&cert.thumbprint)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = taken {
            let owner: String = row.try_get("client_id")?;
            return Err(StoreError::Conflict(format!(
                "certificate {} (registered to client {owner})",
                cert.thumbprint
            )));
        }
        let active: i64 = sqlx::query(
            "SELECT count(*) AS n FROM client_certificates \
             WHERE client_id = $1 AND status = 'active'",
        )
        .bind(client_id.as_str())
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if usize::try_from(active).unwrap_or(usize::MAX) >= MAX_ACTIVE_CERTS {
            return Ok(CertAdded::SetFull);
        }
        sqlx::query(
            "INSERT INTO client_certificates (thumbprint, client_id, subject, issuer, serial, \
             not_after, added_at, issuer_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&cert.thumbprint)
        .bind(client_id.as_str())
        .bind(&cert.subject)
        .bind(&cert.issuer)
        .bind(&cert.serial)
        .bind(cert.not_after)
        .bind(now)
        .bind(&cert.issuer_key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(CertAdded::Added)
    }

    pub async fn revoke_client_certificate(
        &self,
        client_id: &ClientId,
        thumbprint: &str,
    ) -> Result<CertRevoked, StoreError> {
        if !storable(thumbprint) {
            return Ok(CertRevoked::NotFound);
        }
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT thumbprint, subject, issuer, serial, not_after, status, issuer_key \
             FROM client_certificates WHERE client_id = $1 AND thumbprint = $2",
        )
        .bind(client_id.as_str())
        .bind(thumbprint)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(CertRevoked::NotFound);
        };
        let record = CertRecord {
            thumbprint: row.try_get("thumbprint")?,
            subject: row.try_get("subject")?,
            issuer: row.try_get("issuer")?,
            serial: row.try_get("serial")?,
            not_after: row.try_get("not_after")?,
            issuer_key: row.try_get("issuer_key")?,
        };
        let status: String = row.try_get("status")?;
        if CertStatus::from_str(&status).map_err(StoreError::Corrupt)? == CertStatus::Revoked {
            return Ok(CertRevoked::Already(record));
        }
        sqlx::query(
            "UPDATE client_certificates SET status = 'revoked' \
             WHERE client_id = $1 AND thumbprint = $2",
        )
        .bind(client_id.as_str())
        .bind(thumbprint)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(CertRevoked::Now(record))
    }

    pub async fn revoked_certificates(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT thumbprint, not_after FROM client_certificates \
             WHERE status = 'revoked' AND not_after > $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("thumbprint")?, r.try_get("not_after")?)))
            .collect()
    }

    pub async fn transition_client(
        &self,
        id: &ClientId,
        from: &[ClientStatus],
        to: ClientStatus,
        now: &str,
    ) -> Result<bool, StoreError> {
        for status in from {
            let done = sqlx::query(
                "UPDATE clients SET status = $1, updated_at = $2 \
                 WHERE client_id = $3 AND status = $4",
            )
            .bind(to.as_str())
            .bind(now)
            .bind(id.as_str())
            .bind(status.as_str())
            .execute(&self.pool)
            .await?;
            if DB::rows_affected(&done) == 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Store {
    pub async fn insert_client(&self, new: &NewClient, now: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.insert_client(new, now).await,
            Self::Postgres(pg) => pg.call(pg.sql.insert_client(new, now)).await,
        }
    }

    pub async fn client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        match self {
            Self::Sqlite(s) => s.client(id).await,
            Self::Postgres(pg) => pg.call(pg.sql.client(id)).await,
        }
    }

    pub async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        match self {
            Self::Sqlite(s) => s.clients().await,
            Self::Postgres(pg) => pg.call(pg.sql.clients()).await,
        }
    }

    /// Active certificates of clients that authenticate with `self_signed_tls_client_auth`.
    pub async fn self_signed_thumbprints(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Sqlite(s) => s.self_signed_thumbprints().await,
            Self::Postgres(pg) => pg.call(pg.sql.self_signed_thumbprints()).await,
        }
    }

    /// Active certificates with their owners, for the certificate-expiry metric.
    pub async fn client_certificates(&self) -> Result<Vec<(String, CertRecord)>, StoreError> {
        match self {
            Self::Sqlite(s) => s.client_certificates().await,
            Self::Postgres(pg) => pg.call(pg.sql.client_certificates()).await,
        }
    }

    /// A client's whole certificate set, revoked ones included, oldest first.
    pub async fn client_certificates_of(
        &self,
        client_id: &ClientId,
    ) -> Result<Vec<ClientCert>, StoreError> {
        match self {
            Self::Sqlite(s) => s.client_certificates_of(client_id).await,
            Self::Postgres(pg) => pg.call(pg.sql.client_certificates_of(client_id)).await,
        }
    }

    /// Adds a certificate to a client's set, if the set has room (at most
    /// [`MAX_ACTIVE_CERTS`] active); a certificate registered to anyone already is a conflict.
    pub async fn add_client_certificate(
        &self,
        client_id: &ClientId,
        cert: &CertRecord,
        now: &str,
    ) -> Result<CertAdded, StoreError> {
        match self {
            Self::Sqlite(s) => s.add_client_certificate(client_id, cert, now).await,
            Self::Postgres(pg) => {
                pg.call(pg.sql.add_client_certificate(client_id, cert, now))
                    .await
            }
        }
    }

    /// Revokes one certificate of a client's set; it stays in the set, revoked.
    pub async fn revoke_client_certificate(
        &self,
        client_id: &ClientId,
        thumbprint: &str,
    ) -> Result<CertRevoked, StoreError> {
        match self {
            Self::Sqlite(s) => s.revoke_client_certificate(client_id, thumbprint).await,
            Self::Postgres(pg) => {
                pg.call(pg.sql.revoke_client_certificate(client_id, thumbprint))
                    .await
            }
        }
    }

    /// Revoked certificates that have not expired yet: `(thumbprint, not_after)`.
    pub async fn revoked_certificates(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        match self {
            Self::Sqlite(s) => s.revoked_certificates(now).await,
            Self::Postgres(pg) => pg.call(pg.sql.revoked_certificates(now)).await,
        }
    }

    /// Moves a client to `to` if it is in one of `from` (each move is one conditional
    /// update, so two operators acting at once cannot both move it); false otherwise.
    pub async fn transition_client(
        &self,
        id: &ClientId,
        from: &[ClientStatus],
        to: ClientStatus,
        now: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.transition_client(id, from, to, now).await,
            Self::Postgres(pg) => pg.call(pg.sql.transition_client(id, from, to, now)).await,
        }
    }
}

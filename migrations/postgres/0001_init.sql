-- PostgreSQL schema: the same tables as migrations/sqlite (0001 + 0002), in one step.

-- Client registry: registered TPPs and the certificates they authenticate with.
CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    roles         TEXT NOT NULL,
    auth_method   TEXT NOT NULL CHECK (auth_method IN ('tls_client_auth', 'self_signed_tls_client_auth')),
    subject_dn    TEXT,
    redirect_uris TEXT NOT NULL DEFAULT '[]',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE client_certificates (
    thumbprint TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES clients (client_id),
    subject    TEXT NOT NULL,
    issuer     TEXT NOT NULL,
    serial     TEXT NOT NULL,
    not_after  BIGINT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    added_at   TEXT NOT NULL
);
CREATE INDEX client_certificates_client ON client_certificates (client_id);

-- Open Banking consents of every kind; `data` and `risk` hold the validated request objects.
CREATE TABLE consents (
    consent_id        TEXT PRIMARY KEY,
    kind              TEXT NOT NULL,
    client_id         TEXT NOT NULL REFERENCES clients (client_id),
    status            TEXT NOT NULL,
    data              TEXT NOT NULL,
    risk              TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    status_updated_at TEXT NOT NULL,
    idempotency_key   TEXT,
    request_hash      TEXT,
    UNIQUE (client_id, kind, idempotency_key)
);

-- Revoked access tokens, kept until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);

-- The access log: append-only, hash-chained (hash = SHA-256(prev_hash || canonical event)).
CREATE TABLE audit_events (
    seq             BIGINT PRIMARY KEY,
    ts              TEXT NOT NULL,
    interaction_id  TEXT NOT NULL,
    peer_ip         TEXT,
    client_id       TEXT,
    cert_thumbprint TEXT,
    cert_subject    TEXT,
    cert_serial     TEXT,
    method          TEXT NOT NULL,
    route           TEXT NOT NULL,
    status          BIGINT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('allowed', 'denied')),
    reason          TEXT,
    token_jti       TEXT,
    consent_id      TEXT,
    latency_us      BIGINT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX audit_events_ts ON audit_events (ts);
CREATE INDEX audit_events_client ON audit_events (client_id, seq);

-- The sandbox bank: customers (PSUs), their accounts and transactions. Amounts are integer
-- minor units (pence); `booked_at` is UTC RFC 3339 with a fixed width, so text order is time order.
CREATE TABLE customers (
    username      TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL
);

CREATE TABLE accounts (
    account_id       TEXT PRIMARY KEY,
    owner            TEXT NOT NULL REFERENCES customers (username),
    currency         TEXT NOT NULL,
    account_type     TEXT NOT NULL,
    account_sub_type TEXT NOT NULL,
    nickname         TEXT NOT NULL,
    scheme_name      TEXT NOT NULL,
    identification   TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    opened_at        TEXT NOT NULL,
    balance_minor    BIGINT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX accounts_owner ON accounts (owner);

CREATE TABLE transactions (
    transaction_id      TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts (account_id),
    booked_at           TEXT NOT NULL,
    amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
    credit_debit        TEXT NOT NULL CHECK (credit_debit IN ('Credit', 'Debit')),
    code                TEXT NOT NULL,
    reference           TEXT NOT NULL,
    description         TEXT NOT NULL,
    counterparty        TEXT NOT NULL,
    balance_after_minor BIGINT NOT NULL
);
CREATE INDEX transactions_account ON transactions (account_id, booked_at, transaction_id);

-- A client's public keys (a JWK Set), for its signed request objects (RFC 9101).
ALTER TABLE clients ADD COLUMN jwks TEXT;

-- The bank customer an audit event concerns (customer pages).
ALTER TABLE audit_events ADD COLUMN psu TEXT;

-- Who authorised a consent, and which of their accounts it covers.
ALTER TABLE consents ADD COLUMN psu TEXT REFERENCES customers (username);
ALTER TABLE consents ADD COLUMN account_ids TEXT NOT NULL DEFAULT '[]';

-- An authorization grant: what one authorization code was exchanged for. Refresh tokens and the
-- access tokens issued from it belong to it, so a replayed code or a reused rotated-out refresh
-- token revokes them all.
CREATE TABLE grants (
    grant_id        TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES clients (client_id),
    cert_thumbprint TEXT NOT NULL,
    consent_id      TEXT NOT NULL REFERENCES consents (consent_id),
    scope           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX grants_consent ON grants (consent_id);

-- Refresh tokens are stored as SHA-256 hashes, never in the clear.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL REFERENCES grants (grant_id),
    status     TEXT NOT NULL CHECK (status IN ('active', 'rotated')),
    created_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

CREATE TABLE grant_access_tokens (
    jti        TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL REFERENCES grants (grant_id),
    expires_at BIGINT NOT NULL
);
CREATE INDEX grant_access_tokens_grant ON grant_access_tokens (grant_id);

-- Domestic payments: at most one per consent (UNIQUE), one per idempotency key per client.
CREATE TABLE payments (
    payment_id        TEXT PRIMARY KEY,
    consent_id        TEXT NOT NULL UNIQUE REFERENCES consents (consent_id),
    client_id         TEXT NOT NULL REFERENCES clients (client_id),
    account_id        TEXT NOT NULL REFERENCES accounts (account_id),
    transaction_id    TEXT NOT NULL REFERENCES transactions (transaction_id),
    status            TEXT NOT NULL,
    data              TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    status_updated_at TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    request_hash      TEXT NOT NULL,
    UNIQUE (client_id, idempotency_key)
);

CREATE TABLE funds_confirmations (
    confirmation_id TEXT PRIMARY KEY,
    consent_id      TEXT NOT NULL REFERENCES consents (consent_id),
    client_id       TEXT NOT NULL REFERENCES clients (client_id),
    data            TEXT NOT NULL,
    created_at      TEXT NOT NULL
);

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
    not_after  INTEGER NOT NULL,
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
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL
);

-- The access log: append-only, hash-chained (hash = SHA-256(prev_hash || canonical event)).
CREATE TABLE audit_events (
    seq             INTEGER PRIMARY KEY,
    ts              TEXT NOT NULL,
    interaction_id  TEXT NOT NULL,
    peer_ip         TEXT,
    client_id       TEXT,
    cert_thumbprint TEXT,
    cert_subject    TEXT,
    cert_serial     TEXT,
    method          TEXT NOT NULL,
    route           TEXT NOT NULL,
    status          INTEGER NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('allowed', 'denied')),
    reason          TEXT,
    token_jti       TEXT,
    consent_id      TEXT,
    latency_us      INTEGER NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX audit_events_ts ON audit_events (ts);
CREATE INDEX audit_events_client ON audit_events (client_id, seq);

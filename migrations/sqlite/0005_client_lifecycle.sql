-- no-transaction
-- Clients may now be `pending` (registered, awaiting an operator's approval) and `deleted`
-- (gone for every call, kept for audit attribution). SQLite cannot alter a CHECK constraint, so
-- the table is rebuilt (https://sqlite.org/lang_altertable.html#otheralter): foreign keys off
-- outside the transaction (the rows and their keys are copied unchanged).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE clients_new (
    client_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'active', 'suspended', 'deleted')),
    roles         TEXT NOT NULL,
    auth_method   TEXT NOT NULL CHECK (auth_method IN ('tls_client_auth', 'self_signed_tls_client_auth')),
    subject_dn    TEXT,
    redirect_uris TEXT NOT NULL DEFAULT '[]',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    jwks          TEXT
);
INSERT INTO clients_new (client_id, name, status, roles, auth_method, subject_dn, redirect_uris,
                         created_at, updated_at, jwks)
    SELECT client_id, name, status, roles, auth_method, subject_dn, redirect_uris, created_at,
           updated_at, jwks
    FROM clients;
DROP TABLE clients;
ALTER TABLE clients_new RENAME TO clients;
COMMIT;
PRAGMA foreign_keys = ON;

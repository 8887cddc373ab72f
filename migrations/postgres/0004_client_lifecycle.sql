-- Clients may now be `pending` (registered, awaiting an operator's approval) and `deleted`
-- (gone for every call, kept for audit attribution).
ALTER TABLE clients DROP CONSTRAINT clients_status_check;
ALTER TABLE clients ADD CONSTRAINT clients_status_check
    CHECK (status IN ('pending', 'active', 'suspended', 'deleted'));

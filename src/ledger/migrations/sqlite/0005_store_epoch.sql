-- The epoch of the store's keys (Redis's incarnation of the account's partition) in which the
-- account was last loaded into the store from the ledger. An outbox record of an older epoch
-- describes something the store lost before the ledger had it, and is not written.
ALTER TABLE accounts ADD COLUMN store_epoch TEXT;

-- One account's holds, read when the store loads it.
CREATE INDEX holds_by_account ON holds (account_id, state);

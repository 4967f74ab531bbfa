-- The authoritative record: accounts, grants, prices and the append-only ledger entries, plus
-- the hold and idempotency state a store needs to be rebuilt after a restart.
-- Amounts are integer minor units (millionths); times are Unix milliseconds.
-- The same tables as the SQLite ledger, so that both behave alike.

CREATE TABLE accounts (
    account_id     TEXT PRIMARY KEY,
    display_name   TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at_ms  BIGINT NOT NULL
);

CREATE TABLE grants (
    account_id     TEXT NOT NULL,
    grant_id       TEXT NOT NULL,
    wallet         TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('included', 'promotional', 'prepaid')),
    priority       BIGINT NOT NULL,
    amount_minor   BIGINT NOT NULL CHECK (amount_minor >= 0),
    expires_at_ms  BIGINT,
    features       TEXT NOT NULL DEFAULT '[]',  -- JSON array of feature ids; empty means any
    created_at_ms  BIGINT NOT NULL,
    voided_at_ms   BIGINT,
    PRIMARY KEY (account_id, grant_id)
);

CREATE TABLE entries (
    seq              BIGSERIAL PRIMARY KEY,
    entry_id         TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL CHECK (kind IN ('grant', 'void', 'commit', 'charge')),
    account_id       TEXT NOT NULL,
    wallet           TEXT NOT NULL,
    feature          TEXT,
    model            TEXT,
    usage            TEXT,            -- JSON usage the amount was priced from
    amount_minor     BIGINT NOT NULL CHECK (amount_minor >= 0),
    reservation_id   TEXT,
    grant_id         TEXT,
    idempotency_key  TEXT,
    labels           TEXT NOT NULL,   -- JSON object
    reason           TEXT,
    at_ms            BIGINT NOT NULL
);

CREATE INDEX entries_by_account ON entries (account_id, seq);
CREATE INDEX entries_by_account_time ON entries (account_id, at_ms);

-- What each grant paid of an entry (commits, charges) or lost (voids).
CREATE TABLE entry_splits (
    entry_id      TEXT NOT NULL,
    position      BIGINT NOT NULL,
    account_id    TEXT NOT NULL,
    grant_id      TEXT NOT NULL,
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (entry_id, position)
);

CREATE INDEX entry_splits_by_grant ON entry_splits (account_id, grant_id);

CREATE FUNCTION creditgate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only';
END $$;

CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
FOR EACH ROW EXECUTE FUNCTION creditgate_append_only();
CREATE TRIGGER entry_splits_append_only BEFORE UPDATE OR DELETE ON entry_splits
FOR EACH ROW EXECUTE FUNCTION creditgate_append_only();

-- Latest state of each reservation (JSON), for rebuilding the store.
CREATE TABLE holds (
    reservation_id  TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('held', 'committed', 'released', 'expired')),
    version         BIGINT NOT NULL DEFAULT 0,  -- only a newer version replaces a hold
    updated_at_ms   BIGINT NOT NULL,
    body            TEXT NOT NULL
);

CREATE INDEX holds_by_state ON holds (state, updated_at_ms);

-- Replies kept for idempotency keys (JSON), for rebuilding the store.
CREATE TABLE remembered (
    account_id       TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    at_ms            BIGINT NOT NULL,
    body             TEXT NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);

CREATE TABLE prices (
    feature        TEXT PRIMARY KEY,
    wallet         TEXT NOT NULL,
    rule           TEXT NOT NULL,   -- JSON price rule
    updated_at_ms  BIGINT NOT NULL
);

-- Changes another system (or this one) made to the ledger that a store must apply: filled by
-- triggers, read by the inbound sync loop in order of `seq`.
CREATE TABLE changes (
    seq         BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('grant', 'void', 'price')),
    account_id  TEXT,
    ref         TEXT NOT NULL
);

CREATE FUNCTION creditgate_note_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'prices' THEN
        INSERT INTO changes (kind, account_id, ref) VALUES ('price', NULL, NEW.feature);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO changes (kind, account_id, ref) VALUES ('grant', NEW.account_id, NEW.grant_id);
    ELSIF OLD.voided_at_ms IS NULL AND NEW.voided_at_ms IS NOT NULL THEN
        INSERT INTO changes (kind, account_id, ref) VALUES ('void', NEW.account_id, NEW.grant_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER grants_changed AFTER INSERT OR UPDATE ON grants
FOR EACH ROW EXECUTE FUNCTION creditgate_note_change();
CREATE TRIGGER prices_changed AFTER INSERT OR UPDATE ON prices
FOR EACH ROW EXECUTE FUNCTION creditgate_note_change();

-- The authoritative record: accounts, grants, prices and the append-only ledger entries, plus
-- the hold and idempotency state a store needs to be rebuilt after a restart.
-- Amounts are integer minor units (millionths); times are Unix milliseconds.

CREATE TABLE accounts (
    account_id     TEXT PRIMARY KEY,
    display_name   TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at_ms  INTEGER NOT NULL
);

CREATE TABLE grants (
    account_id     TEXT NOT NULL,
    grant_id       TEXT NOT NULL,
    wallet         TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('included', 'promotional', 'prepaid')),
    priority       INTEGER NOT NULL,
    amount_minor   INTEGER NOT NULL CHECK (amount_minor >= 0),
    expires_at_ms  INTEGER,
    features       TEXT NOT NULL,   -- JSON array of feature ids; empty means any feature
    created_at_ms  INTEGER NOT NULL,
    voided_at_ms   INTEGER,
    PRIMARY KEY (account_id, grant_id)
);

CREATE TABLE entries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id         TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL CHECK (kind IN ('grant', 'void', 'commit', 'charge')),
    account_id       TEXT NOT NULL,
    wallet           TEXT NOT NULL,
    feature          TEXT,
    model            TEXT,
    usage            TEXT,            -- JSON usage the amount was priced from
    amount_minor     INTEGER NOT NULL CHECK (amount_minor >= 0),
    reservation_id   TEXT,
    grant_id         TEXT,
    idempotency_key  TEXT,
    labels           TEXT NOT NULL,   -- JSON object
    reason           TEXT,
    at_ms            INTEGER NOT NULL
);

CREATE INDEX entries_by_account ON entries (account_id, seq);

-- What each grant paid of an entry (commits, charges) or lost (voids).
CREATE TABLE entry_splits (
    entry_id      TEXT NOT NULL,
    position      INTEGER NOT NULL,
    account_id    TEXT NOT NULL,
    grant_id      TEXT NOT NULL,
    amount_minor  INTEGER NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (entry_id, position)
);

CREATE INDEX entry_splits_by_grant ON entry_splits (account_id, grant_id);

CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER entry_splits_no_update BEFORE UPDATE ON entry_splits
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER entry_splits_no_delete BEFORE DELETE ON entry_splits
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;

-- Latest state of each reservation (JSON), for rebuilding the store.
CREATE TABLE holds (
    reservation_id  TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('held', 'committed', 'released', 'expired')),
    updated_at_ms   INTEGER NOT NULL,
    body            TEXT NOT NULL
);

CREATE INDEX holds_by_state ON holds (state, updated_at_ms);

-- Replies kept for idempotency keys (JSON), for rebuilding the store.
CREATE TABLE remembered (
    account_id       TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    at_ms            INTEGER NOT NULL,
    body             TEXT NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);

CREATE TABLE prices (
    feature        TEXT PRIMARY KEY,
    wallet         TEXT NOT NULL,
    rule           TEXT NOT NULL,   -- JSON price rule
    updated_at_ms  INTEGER NOT NULL
);

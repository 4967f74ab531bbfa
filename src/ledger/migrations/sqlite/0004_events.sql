-- Real time: wallets' alert thresholds and auto top-up policies, the events stores make
-- (for webhooks and listing), top-up requests and the grants that answer them, and webhook
-- deliveries.

-- A wallet's thresholds and auto top-up policy (JSON), as last set, and which thresholds may
-- fire ('1') or have fired and wait to be re-armed ('0'), one character per threshold.
CREATE TABLE wallet_alerts (
    account_id     TEXT NOT NULL,
    wallet         TEXT NOT NULL,
    policy         TEXT NOT NULL,
    armed          TEXT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (account_id, wallet)
);

-- Every event, as the store made it (JSON body); `id` is unique, so writing one twice is
-- harmless.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    wallet      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    body        TEXT NOT NULL
);

CREATE INDEX events_by_account ON events (account_id, at_ms);

-- Top-up requests, and the grant that answered each. A grant may reach the ledger before the
-- request it answers (from another replica): then the row starts with the answer alone.
CREATE TABLE top_ups (
    request_id       TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL,
    wallet           TEXT NOT NULL,
    amount_minor     BIGINT,
    requested_at_ms  BIGINT,
    grant_id         TEXT,
    answered_at_ms   BIGINT
);

CREATE INDEX top_ups_by_wallet ON top_ups (account_id, wallet);

-- One row per event and webhook endpoint that wants it, written with the event: the durable
-- outbox the webhook sender works through. A replica takes rows due by leasing them.
CREATE TABLE deliveries (
    event_id            TEXT NOT NULL,
    endpoint            TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT NOT NULL,
    lease_until_ms      BIGINT NOT NULL DEFAULT 0,
    delivered_at_ms     BIGINT,
    last_error          TEXT,
    PRIMARY KEY (event_id, endpoint)
);

CREATE INDEX deliveries_due ON deliveries (delivered_at_ms, next_attempt_at_ms);

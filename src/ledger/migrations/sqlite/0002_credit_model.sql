-- The credit model: recurring allowances, flex, overruns. A recurring grant's period and the
-- period its remaining amount belongs to (its resets are entries: "refill/..." grants and
-- "lapse/..." voids); a wallet's flex cap; how far a commit went beyond its hold; each
-- feature's overrun policy. Flex used and debt are not stored: they are the sums of the
-- "~flex" and "~debt" portions of commits and charges, less the repayments of debt (charge
-- entries whose grant_id is "~debt").

CREATE TABLE wallets (
    account_id      TEXT NOT NULL,
    wallet          TEXT NOT NULL,
    flex_cap_minor  BIGINT NOT NULL CHECK (flex_cap_minor >= 0),
    updated_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (account_id, wallet)
);

ALTER TABLE entries ADD COLUMN overrun_minor BIGINT NOT NULL DEFAULT 0;
-- For a grant that refunds a commit or charge: that entry's id.
ALTER TABLE entries ADD COLUMN refund_of TEXT;

-- JSON overrun policy; NULL means cap_at_hold.
ALTER TABLE prices ADD COLUMN overrun TEXT;

ALTER TABLE grants ADD COLUMN period TEXT CHECK (period IN ('month', 'year'));
ALTER TABLE grants ADD COLUMN period_anchor_ms BIGINT;
ALTER TABLE grants ADD COLUMN rollover_max_minor BIGINT;
ALTER TABLE grants ADD COLUMN period_index BIGINT NOT NULL DEFAULT 0;
ALTER TABLE grants ADD COLUMN period_granted_minor BIGINT;

-- The period a recurring grant's remaining amount belongs to since its latest reset, and what
-- it had at that period's start; the newest period wins, whatever order resets arrive in
-- (a reset may even arrive before its grant). The grants row keeps the period it started in.
CREATE TABLE grant_periods (
    account_id            TEXT NOT NULL,
    grant_id              TEXT NOT NULL,
    period_index          BIGINT NOT NULL,
    period_granted_minor  BIGINT NOT NULL,
    PRIMARY KEY (account_id, grant_id)
);

-- Spend limits: what the part of an account carrying a label may spend per day, per month or
-- in total (`per`). What a limit has used is not stored: it is the sum of the commits and
-- charges carrying the label in the current window, since `since_ms`.
CREATE TABLE spend_limits (
    account_id     TEXT NOT NULL,
    label_key      TEXT NOT NULL,
    label_value    TEXT NOT NULL,
    per            TEXT NOT NULL CHECK (per IN ('day', 'month', 'total')),
    amount_minor   BIGINT NOT NULL CHECK (amount_minor >= 0),
    since_ms       BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (account_id, label_key, label_value, per)
);

-- Prices set ahead: each takes over from the feature's price at `effective_at_ms`. The price
-- in force is the newest of these whose time has come, or the `prices` row (in force since it
-- was last set) if that is newer.
CREATE TABLE price_versions (
    feature          TEXT NOT NULL,
    effective_at_ms  BIGINT NOT NULL,
    wallet           TEXT NOT NULL,
    rule             TEXT NOT NULL,   -- JSON price rule
    overrun          TEXT,            -- JSON overrun policy; NULL means cap_at_hold
    updated_at_ms    BIGINT NOT NULL,
    PRIMARY KEY (feature, effective_at_ms)
);

CREATE TRIGGER price_versions_changed_insert AFTER INSERT ON price_versions
BEGIN INSERT INTO changes (kind, account_id, ref) VALUES ('price', NULL, NEW.feature); END;
CREATE TRIGGER price_versions_changed_update AFTER UPDATE ON price_versions
BEGIN INSERT INTO changes (kind, account_id, ref) VALUES ('price', NULL, NEW.feature); END;

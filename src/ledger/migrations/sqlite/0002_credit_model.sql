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

-- JSON overrun policy; NULL means cap_at_hold.
ALTER TABLE prices ADD COLUMN overrun TEXT;

ALTER TABLE grants ADD COLUMN period TEXT CHECK (period IN ('month', 'year'));
ALTER TABLE grants ADD COLUMN period_anchor_ms BIGINT;
ALTER TABLE grants ADD COLUMN rollover_max_minor BIGINT;
ALTER TABLE grants ADD COLUMN period_index BIGINT NOT NULL DEFAULT 0;

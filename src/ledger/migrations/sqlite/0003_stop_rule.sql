-- A feature's stop rule: what happens to holds still running when its wallet runs out.
-- NULL means finish_running.
ALTER TABLE prices ADD COLUMN stop TEXT;
ALTER TABLE price_versions ADD COLUMN stop TEXT;

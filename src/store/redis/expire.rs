//! The expiry sweep in Redis: holds past their expiry released, old replies forgotten.

use async_trait::async_trait;

// The Redis store's helpers (keys, calls, replies) are its parent's.
use super::*;

#[async_trait]
impl Expiry for RedisStore {
    async fn expire_due(&self, limit: usize) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        let mut failed = None;
        for partition in self.partitions() {
            let mut invocation = self.scripts.expire.prepare_invoke();
            invocation
                .key(partition.expiries())
                .key(partition.outbox())
                .arg(partition.account_prefix())
                .arg(self.retention())
                .arg(limit);
            // One partition failing does not keep the others' holds from expiring.
            let reply = match self.invoke(invocation).await {
                Ok(reply) => reply,
                Err(error) => {
                    failed = Some(error);
                    continue;
                }
            };
            swept.examined = swept
                .examined
                .max(codec::int(&reply[0], "examined")? as usize);
            swept.expired += codec::int(&reply[1], "expired")? as usize;
        }
        match failed {
            Some(error) if swept.examined == 0 => Err(error),
            Some(error) => {
                tracing::warn!(%error, "expiring the holds of a partition failed");
                Ok(swept)
            }
            None => Ok(swept),
        }
    }

    async fn forget_older_than(
        &self,
        _retention_ms: i64,
        _limit: usize,
    ) -> Result<usize, StoreError> {
        // Redis forgets ended holds and replies by itself: their keys expire.
        Ok(0)
    }
}

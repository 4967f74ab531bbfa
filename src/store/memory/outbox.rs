//! The in-process outbox, read and acknowledged by the sync loop.

use async_trait::async_trait;

// The in-process store's rules and plumbing are its parent's.
use super::*;

#[async_trait]
impl OutboxStore for MemoryStore {
    async fn outbox_read(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        Ok(self.outbox().records.iter().take(limit).cloned().collect())
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let now = self.clock.now_ms();
        let outbox = self.outbox();
        Ok(OutboxStats {
            records: outbox.records.len(),
            lag_ms: outbox
                .records
                .front()
                .map_or(0, |oldest| (now - oldest.at_ms).max(0)),
        })
    }

    async fn outbox_ack(&self, positions: &[OutboxPosition]) -> Result<(), StoreError> {
        let Some(seq) = positions.iter().filter_map(OutboxPosition::seq).max() else {
            return Ok(());
        };
        let mut outbox = self.outbox();
        while outbox
            .records
            .front()
            .is_some_and(|r| r.position.seq().is_some_and(|s| s <= seq))
        {
            outbox.records.pop_front();
        }
        Ok(())
    }
}

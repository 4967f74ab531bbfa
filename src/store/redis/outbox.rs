//! The outbox streams, one per partition, read by every replica's sync loop through one
//! consumer group: reading (this replica's pending records first, then new ones, then those
//! another replica left too long), acknowledging (only in the epoch the records were written
//! in), and making the stream, its group and its epoch again once Redis lost them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};

use super::call::Reply;
use super::keys::Partition;
use super::{GROUP, RedisStore, codec};
use crate::record::{OutboxPosition, OutboxRecord};
use crate::store::{Durable, OutboxStats, OutboxStore, Spending, StoreError};

/// Stream entries as `XRANGE` answers them: ids with their fields.
type StreamEntries = Vec<(String, Vec<(String, String)>)>;

impl RedisStore {
    /// Makes the partition's outbox stream and consumer group, unless they are there (then
    /// answers false). The
    /// replica that makes them (at the first start on a Redis, or after Redis lost its keys)
    /// is the one that loads the partition's accounts with open holds again
    /// ([`crate::store::OutboxStore::heal`]). The group reads the stream from its start: records written
    /// since the keys were lost are carried like any other.
    pub(super) async fn make_group(&self, partition: &Partition) -> Result<bool, StoreError> {
        let key = partition.outbox();
        let created: Result<(), StoreError> = self
            .call(|mut c| async move {
                c.xgroup_create_mkstream::<_, _, _, ()>(key, GROUP, "0")
                    .await
            })
            .await;
        match created {
            Ok(()) => {
                self.note_lost(partition.index);
                Ok(true)
            }
            Err(StoreError::Unavailable(message)) if message.contains("BUSYGROUP") => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// After an outbox command found no consumer group (`NOGROUP`): Redis lost the
    /// partition's keys. Makes them again, so that the outbox drains without a restart.
    async fn remake_group(&self, partition: &Partition) -> Result<(), StoreError> {
        self.set_claim_cursor(partition.index, "0-0".to_owned());
        if self.make_group(partition).await? {
            tracing::warn!(
                partition = partition.index,
                "redis lost the keys of this partition (a restart without persistence, a \
                 failover to an empty replica, or FLUSHALL); made its outbox again"
            );
            metrics::counter!(crate::telemetry::STORE_RESETS_TOTAL).increment(1);
        }
        Ok(())
    }

    /// The partition's epoch, made now if Redis has none (see `outbox.lua`'s `epoch_of`).
    pub(super) async fn epoch(&self, partition: &Partition) -> Result<String, StoreError> {
        let key = partition.epoch();
        let made = uuid::Uuid::new_v4().simple().to_string();
        let offered = made.clone();
        // `SET … NX GET` answers the value that was there, or nothing when it set ours.
        let kept: Option<String> = self
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(offered)
                    .arg("NX")
                    .arg("GET")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(kept.unwrap_or(made))
    }

    fn claim_cursor(&self, partition: u32) -> String {
        self.claim_cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .cloned()
            .unwrap_or_else(|| "0-0".to_owned())
    }

    fn set_claim_cursor(&self, partition: u32, cursor: String) {
        self.claim_cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition, cursor);
    }

    /// The record a script appended: the one its batch appended its entries to, or the one
    /// its reply names (`[.., outbox id, entries]` at `at`).
    pub(super) fn record(
        &self,
        partition: &Partition,
        reply: &Reply,
        at: usize,
    ) -> Result<Durable, StoreError> {
        if let Some(appended) = &reply.record {
            if let Some(record) = appended.read.get() {
                return Ok(Durable::Record(record.clone()));
            }
            let record = Arc::new(stream_record(
                partition,
                &appended.position,
                &appended.entries,
            )?);
            // Another caller of the batch may have read it meanwhile: either is the same.
            return Ok(Durable::Record(
                appended.read.get_or_init(|| record).clone(),
            ));
        }
        match (reply.get(at), reply.get(at + 1)) {
            (Some(position), Some(entries)) if !position.is_empty() => Ok(Durable::Record(
                Arc::new(stream_record(partition, position, entries)?),
            )),
            _ => Ok(Durable::Nothing),
        }
    }
}

/// The record at `position` (`<stream id>@<epoch>`) of a partition's stream, with its entries.
fn stream_record(
    partition: &Partition,
    position: &str,
    entries: &str,
) -> Result<OutboxRecord, StoreError> {
    let (id, epoch) = match position.split_once('@') {
        Some((id, epoch)) => (id, Some(epoch.to_owned())),
        None => (position, None),
    };
    Ok(OutboxRecord {
        at_ms: stream_ms(id),
        position: OutboxPosition::Stream {
            partition: partition.index,
            id: id.to_owned(),
            epoch,
        },
        entries: codec::outbox_entries(entries)?,
    })
}

/// The milliseconds part of a stream id.
pub(super) fn stream_ms(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

#[async_trait]
impl OutboxStore for RedisStore {
    async fn outbox_read(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut records = Vec::new();
        // Start at a different partition each time, so no partition waits behind a busy one.
        let first = self.next_partition.fetch_add(1, Ordering::Relaxed) % self.settings.partitions;
        for offset in 0..self.settings.partitions {
            if records.len() >= limit {
                break;
            }
            let partition = Partition::new(
                &self.settings.namespace,
                (first + offset) % self.settings.partitions,
            );
            let want = limit - records.len();
            let key = partition.outbox();
            // This replica's own unacknowledged records first, else new ones; and always some
            // of those another replica left unacknowledged too long (it may be dead).
            let mut ids: Vec<StreamId> = Vec::new();
            for start in ["0", ">"] {
                let consumer = self.consumer.clone();
                let key = key.clone();
                let reply: StreamReadReply = match self
                    .call(|mut c| async move {
                        let options = StreamReadOptions::default()
                            .group(GROUP, consumer)
                            .count(want);
                        c.xread_options(&[key], &[start], &options).await
                    })
                    .await
                {
                    Err(StoreError::Unavailable(message)) if message.contains("NOGROUP") => {
                        self.remake_group(&partition).await?;
                        StreamReadReply::default()
                    }
                    reply => reply?,
                };
                ids.extend(reply.keys.into_iter().flat_map(|k| k.ids));
                if !ids.is_empty() {
                    break;
                }
            }
            let cursor = self.claim_cursor(partition.index);
            let consumer = self.consumer.clone();
            let idle_ms = self.settings.claim_idle_ms;
            let claim_key = key.clone();
            let claimed: StreamAutoClaimReply = match self
                .call(|mut c| async move {
                    redis::cmd("XAUTOCLAIM")
                        .arg(claim_key)
                        .arg(GROUP)
                        .arg(consumer)
                        .arg(idle_ms)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(want)
                        .query_async(&mut c)
                        .await
                })
                .await
            {
                Err(StoreError::Unavailable(message)) if message.contains("NOGROUP") => {
                    self.remake_group(&partition).await?;
                    StreamAutoClaimReply::default()
                }
                claimed => claimed?,
            };
            // From the start again once the stream is done with (or made again).
            let next = match claimed.next_stream_id.as_str() {
                "" => "0-0".to_owned(),
                _ => claimed.next_stream_id,
            };
            self.set_claim_cursor(partition.index, next);
            for entry in claimed.claimed {
                if !ids.iter().any(|known| known.id == entry.id) {
                    ids.push(entry);
                }
            }
            for entry in ids {
                let at: String = entry.get("at").unwrap_or_default();
                let entries: String = entry.get("entries").unwrap_or_default();
                records.push(OutboxRecord {
                    at_ms: codec::int(&at, "outbox time").unwrap_or(stream_ms(&entry.id)),
                    position: OutboxPosition::Stream {
                        partition: partition.index,
                        id: entry.id.clone(),
                        epoch: entry.get("epoch"),
                    },
                    entries: codec::outbox_entries(&entries)?,
                });
            }
        }
        Ok(records)
    }

    async fn outbox_ack(&self, positions: &[OutboxPosition]) -> Result<(), StoreError> {
        let mut by_partition: BTreeMap<(u32, &str), Vec<&str>> = BTreeMap::new();
        for position in positions {
            if let OutboxPosition::Stream {
                partition,
                id,
                epoch,
            } = position
            {
                let epoch = epoch.as_deref().unwrap_or("");
                by_partition
                    .entry((*partition, epoch))
                    .or_default()
                    .push(id);
            }
        }
        for ((partition, epoch), ids) in by_partition {
            let partition = Partition::new(&self.settings.namespace, partition);
            let mut invocation = self.scripts.ack.prepare_invoke();
            invocation
                .key(partition.outbox())
                .key(partition.epoch())
                .arg(GROUP)
                .arg(epoch);
            for id in ids {
                invocation.arg(id);
            }
            self.invoke(invocation).await?;
        }
        Ok(())
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let now = self.now_ms().await?;
        let mut stats = OutboxStats::default();
        for partition in self.partitions() {
            let key = partition.outbox();
            let (len, first): (usize, StreamEntries) = self
                .call(|mut c| async move {
                    redis::pipe()
                        .cmd("XLEN")
                        .arg(&key)
                        .cmd("XRANGE")
                        .arg(&key)
                        .arg("-")
                        .arg("+")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            stats.records += len;
            if let Some((id, _)) = first.first() {
                stats.lag_ms = stats.lag_ms.max((now - stream_ms(id)).max(0));
            }
        }
        Ok(stats)
    }

    async fn heal(&self) -> Result<(), StoreError> {
        self.load_open_holds().await
    }
}

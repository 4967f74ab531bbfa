//! The sync loop: carries the store's outbox into the ledger, and sweeps expired holds.
//!
//! Outbox records are written to the ledger in batches, in order, one transaction per batch;
//! then they are acknowledged in the store. A batch that fails is retried (the ledger ignores
//! what it already has), so every record reaches the ledger exactly once. Callers that must not
//! answer before their write is durable wait on [`Durability`], which wakes the loop at once:
//! writes that arrive while a batch is being written ride on the next one (group commit).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::catalog::{Catalog, SharedCatalog};
use crate::domain::{GrantId, entry_id};
use crate::ledger::{Appended, Change, ChangeKind, Ledger, LedgerError};
use crate::record::{OutboxPosition, OutboxRecord};
use crate::shutdown::Shutdown;
use crate::store::{AccountAdmin, Durable, Expiry, OutboxStore};
use crate::telemetry;

/// How the sync loop runs.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// Most outbox records written in one ledger transaction.
    pub batch_len_max: usize,
    /// Time between flushes when nobody is waiting for one.
    pub interval_ms: u64,
    /// Time between sweeps for expired holds.
    pub sweep_interval_ms: u64,
    /// Most holds expired in one sweep step.
    pub sweep_batch_len_max: usize,
    /// How long idempotent replies and ended holds are kept.
    pub retention_ms: i64,
    /// First wait after a failed ledger write; doubles up to one second.
    pub retry_backoff_ms: u64,
    /// Longest wait for one ledger write before it counts as failed.
    pub ledger_timeout_ms: u64,
    /// Time between reads of changes written to the ledger directly.
    pub inbound_interval_ms: u64,
}

/// Lets a caller wait until a store write has reached the ledger.
#[derive(Clone)]
pub struct Durability {
    persisted: watch::Receiver<u64>,
    kick: Arc<Notify>,
    writer: mpsc::Sender<WriteRequest>,
    ledger: Arc<dyn Ledger>,
    timeout: Duration,
}

/// A record a caller waits on, and where to tell it what became of it.
type WriteRequest = (Arc<OutboxRecord>, oneshot::Sender<Written>);

/// What became of a record written for a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Written {
    /// The ledger has it.
    Yes,
    /// The store lost it before the ledger had it: what it did happened nowhere.
    Lost,
    /// The write failed; it may be tried again.
    Failed,
}

/// How often the sync loop exports the outbox's size and lag.
const LAG_RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// Records waiting for the [`LedgerWriter`] before callers are told to retry.
const WRITE_QUEUE_LEN_MAX: usize = 10_000;

/// Writes the records of callers that wait for them (writes to a shared store, which any
/// replica's sync loop may carry), many per transaction: whoever arrives while a transaction is
/// being written rides on the next one. Acknowledges what it wrote in the store's outbox, so
/// that a sync loop which has not read those records yet does not write them again.
pub struct LedgerWriter {
    requests: mpsc::Receiver<WriteRequest>,
    store: Arc<dyn OutboxStore>,
    ledger: Arc<dyn Ledger>,
    batch_len_max: usize,
}

impl LedgerWriter {
    /// Runs until shutdown; callers still waiting then are told the write is not durable (their
    /// records still reach the ledger through the outbox).
    pub async fn run(mut self, mut shutdown: Shutdown) {
        loop {
            let first = tokio::select! {
                _ = shutdown.wait() => break,
                request = self.requests.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
            };
            let mut batch = vec![first];
            while batch.len() < self.batch_len_max {
                match self.requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let (requested, replies): (Vec<Arc<OutboxRecord>>, Vec<_>) = batch.into_iter().unzip();
            // Callers whose operations ran in one batch of the store wait on one record.
            let mut records: Vec<OutboxRecord> = Vec::with_capacity(requested.len());
            for (i, record) in requested.iter().enumerate() {
                if !requested[..i].iter().any(|r| Arc::ptr_eq(r, record)) {
                    records.push(OutboxRecord::clone(record));
                }
            }
            let appended = match self.ledger.append(&records).await {
                Ok(appended) => {
                    metrics::counter!(telemetry::LEDGER_BATCHES_TOTAL).increment(1);
                    count_lost(&appended);
                    Some(appended)
                }
                Err(error) => {
                    metrics::counter!(telemetry::LEDGER_WRITE_ERRORS_TOTAL).increment(1);
                    tracing::warn!(%error, records = records.len(), "ledger write failed");
                    None
                }
            };
            let outcomes: Vec<Written> = requested
                .iter()
                .map(|record| match &appended {
                    None => Written::Failed,
                    Some(appended) if appended.stale.contains(&record.position) => Written::Lost,
                    Some(_) => Written::Yes,
                })
                .collect();
            // Only stream records: acknowledging a record of the in-process outbox drops every
            // one before it, which only the sync loop may do. Before the callers are told, so
            // that nothing of their calls is still going on once they are.
            let positions: Vec<OutboxPosition> = records
                .into_iter()
                .map(|r| r.position)
                .filter(|p| matches!(p, OutboxPosition::Stream { .. }))
                .collect();
            if appended.is_some()
                && !positions.is_empty()
                && let Err(error) = self.store.outbox_ack(&positions).await
            {
                // The sync loop writes them again: idempotent, only slower.
                tracing::debug!(%error, "cannot acknowledge records the ledger has");
            }
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that stopped waiting has nothing to be told.
                let _ = reply.send(outcome);
            }
        }
    }
}

/// Counts the records the ledger did not write because the store had lost them.
fn count_lost(appended: &Appended) {
    if !appended.stale.is_empty() {
        metrics::counter!(telemetry::OUTBOX_LOST_RECORDS_TOTAL)
            .increment(appended.stale.len() as u64);
    }
}

/// Why a write is not known to be in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum NotDurable {
    /// The ledger did not take the write in time. The write is in the store and will still
    /// reach the ledger; the caller may retry with its idempotency key to learn the outcome.
    #[error(
        "the ledger has not confirmed the write within {0:?}; retry with the same idempotency key"
    )]
    Late(Duration),
    /// Redis lost its keys after the write and before the ledger had it: the write happened
    /// nowhere, and a retry does it again.
    #[error(
        "the store lost this write before the ledger had it (Redis lost its keys); it did not \
         happen: retry with the same idempotency key"
    )]
    Lost,
}

impl Durability {
    /// Waits until what `durable` names is in the ledger.
    pub async fn wait(&self, durable: &Durable) -> Result<(), NotDurable> {
        match durable {
            Durable::UpTo(seq) => self.wait_for_seq(*seq).await,
            Durable::Record(record) => {
                // Writing a record is idempotent, so a failed write (a deadlock with another
                // replica's sync loop carrying the same records, a dropped connection) is
                // tried again until the deadline.
                let waited = tokio::time::timeout(self.timeout, async {
                    let mut pause = Duration::from_millis(20);
                    loop {
                        let (reply, written) = oneshot::channel();
                        self.writer.send((record.clone(), reply)).await.ok()?;
                        match written.await.ok()? {
                            Written::Yes => return Some(Ok(())),
                            Written::Lost => return Some(Err(NotDurable::Lost)),
                            Written::Failed => {}
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                })
                .await;
                match waited {
                    Ok(Some(outcome)) => outcome,
                    _ => Err(NotDurable::Late(self.timeout)),
                }
            }
            // Someone else carries these (the outbox): look until the ledger has them.
            Durable::Entry(id) => {
                self.look_until(|| async { self.ledger.has_entry(id).await.unwrap_or(false) })
                    .await
            }
            Durable::HoldVersion { id, version } => {
                self.look_until(|| async {
                    matches!(self.ledger.hold_version(id).await, Ok(Some(v)) if v >= *version)
                })
                .await
            }
            Durable::Nothing => Ok(()),
        }
    }

    /// Asks `found` again, less and less often, until it says yes or the timeout passes.
    async fn look_until<F, Fut>(&self, found: F) -> Result<(), NotDurable>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let look = async {
            let mut pause = Duration::from_millis(10);
            while !found().await {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        };
        tokio::time::timeout(self.timeout, look)
            .await
            .map_err(|_| NotDurable::Late(self.timeout))
    }

    /// Waits until every record of the in-process outbox up to `seq` is in the ledger.
    async fn wait_for_seq(&self, seq: u64) -> Result<(), NotDurable> {
        let mut persisted = self.persisted.clone();
        if *persisted.borrow() >= seq {
            return Ok(());
        }
        self.kick.notify_one();
        match tokio::time::timeout(self.timeout, persisted.wait_for(|&p| p >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(NotDurable::Late(self.timeout)),
        }
    }
}

/// The sync loop's handle on the outside world.
pub struct SyncLoop {
    store: Arc<dyn OutboxStore>,
    ledger: Arc<dyn Ledger>,
    settings: SyncSettings,
    persisted: watch::Sender<u64>,
    kick: Arc<Notify>,
}

impl SyncLoop {
    /// A loop and the [`Durability`] handle its callers wait on.
    pub fn new(
        store: Arc<dyn OutboxStore>,
        ledger: Arc<dyn Ledger>,
        settings: SyncSettings,
        durable_timeout: Duration,
    ) -> (SyncLoop, Durability, LedgerWriter) {
        let (persisted, rx) = watch::channel(0);
        let kick = Arc::new(Notify::new());
        let (writer, requests) = mpsc::channel(WRITE_QUEUE_LEN_MAX);
        let durability = Durability {
            persisted: rx,
            kick: kick.clone(),
            writer,
            ledger: ledger.clone(),
            timeout: durable_timeout,
        };
        let ledger_writer = LedgerWriter {
            requests,
            store: store.clone(),
            ledger: ledger.clone(),
            batch_len_max: settings.batch_len_max,
        };
        let sync = SyncLoop {
            store,
            ledger,
            settings,
            persisted,
            kick,
        };
        (sync, durability, ledger_writer)
    }

    /// Runs until shutdown, then flushes everything once more. After each flush, loads again
    /// what the store lost (see [`OutboxStore::heal`]), and at most once a second exports
    /// the outbox's size and lag, so that an idle replica's gauges fall to zero too.
    pub async fn run(self, mut shutdown: Shutdown) {
        let interval = Duration::from_millis(self.settings.interval_ms);
        let mut lag_recorded = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            self.flush(&shutdown).await;
            if let Err(error) = self.store.heal().await {
                tracing::warn!(%error, "cannot load again what the store lost; retrying");
            }
            if lag_recorded.elapsed() >= LAG_RECORD_INTERVAL {
                self.record_lag().await;
                lag_recorded = Instant::now();
            }
        }
        self.flush(&shutdown).await;
        tracing::info!("sync loop stopped; outbox flushed");
    }

    async fn record_lag(&self) {
        if let Ok(stats) = self.store.outbox_stats().await {
            metrics::gauge!(telemetry::OUTBOX_RECORDS).set(stats.records as f64);
            metrics::gauge!(telemetry::OUTBOX_LAG_MS).set(stats.lag_ms as f64);
        }
    }

    /// Writes the whole outbox to the ledger, batch by batch. Retries a failing batch with
    /// backoff; once shutdown has fired it tries each batch only a few more times.
    pub async fn flush(&self, shutdown: &Shutdown) {
        let mut backoff_ms = self.settings.retry_backoff_ms;
        let mut failures_after_shutdown = 0;
        loop {
            let batch = match self.store.outbox_read(self.settings.batch_len_max).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the outbox");
                    return;
                }
            };
            if batch.is_empty() {
                return;
            }
            let positions: Vec<OutboxPosition> = batch.iter().map(|r| r.position.clone()).collect();
            let last_seq = positions.iter().filter_map(OutboxPosition::seq).max();
            let deadline = Duration::from_millis(self.settings.ledger_timeout_ms);
            let written = match tokio::time::timeout(deadline, self.ledger.append(&batch)).await {
                Ok(result) => result,
                Err(_) => Err(LedgerError::Database(format!(
                    "no answer within {deadline:?}"
                ))),
            };
            match written {
                Ok(appended) => {
                    count_lost(&appended);
                    backoff_ms = self.settings.retry_backoff_ms;
                    if let Err(error) = self.store.outbox_ack(&positions).await {
                        tracing::warn!(%error, "cannot acknowledge the outbox");
                        return;
                    }
                    if let Some(last) = last_seq {
                        self.persisted.send_replace(last);
                    }
                    metrics::counter!(telemetry::LEDGER_BATCHES_TOTAL).increment(1);
                    metrics::counter!(telemetry::LEDGER_RECORDS_TOTAL)
                        .increment(batch.len() as u64);
                }
                Err(error) => {
                    metrics::counter!(telemetry::LEDGER_WRITE_ERRORS_TOTAL).increment(1);
                    self.record_lag().await;
                    tracing::error!(%error, batch_len = batch.len(), "ledger write failed; retrying");
                    if shutdown.is_fired() {
                        failures_after_shutdown += 1;
                        if failures_after_shutdown >= 3 {
                            tracing::error!("giving up flushing the outbox at shutdown");
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(1_000);
                }
            }
        }
    }
}

/// Expires holds whose time has passed and forgets old idempotent replies, until shutdown.
pub async fn sweep(store: Arc<dyn Expiry>, settings: SyncSettings, mut shutdown: Shutdown) {
    let interval = Duration::from_millis(settings.sweep_interval_ms);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        sweep_round(store.as_ref(), &settings).await;
    }
}

/// One round of the sweep: releases every hold due now, however many stale candidates (holds
/// ended or extended since they were queued) stand before them, then forgets old replies.
pub async fn sweep_round(store: &dyn Expiry, settings: &SyncSettings) {
    let limit = settings.sweep_batch_len_max;
    loop {
        match store.expire_due(limit).await {
            Ok(swept) => {
                if swept.expired > 0 {
                    tracing::debug!(expired = swept.expired, "expired holds released");
                }
                if swept.examined < limit {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "sweep failed");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    loop {
        match store.forget_older_than(settings.retention_ms, limit).await {
            Ok(examined) if examined == limit => tokio::task::yield_now().await,
            Ok(_) => break,
            Err(error) => {
                tracing::warn!(%error, "forgetting old replies failed");
                break;
            }
        }
    }
}

/// Change numbers skipped by the ledger are re-read for this long: a transaction still open
/// may fill them. After it, a skipped number is taken for a rolled-back transaction.
const GAP_WAIT: Duration = Duration::from_secs(60);
/// Most skipped change numbers watched at once.
const GAPS_MAX: usize = 10_000;

/// Carries changes written to the ledger directly (grants, voids, prices: by the Admin API of
/// any replica, or by another system inserting rows) into the store and the catalog.
///
/// Changes are read in order of their number, every `interval_ms`, so one reaches the store
/// within that interval (plus the time to apply it). Applying is idempotent: a grant the store
/// already has, or a void it already made, changes nothing, which is also why a change this
/// replica made itself and reads back is harmless.
pub struct Inbound {
    store: Arc<dyn AccountAdmin>,
    ledger: Arc<dyn Ledger>,
    catalog: Arc<SharedCatalog>,
    /// Number of the newest change applied.
    cursor: i64,
    /// Numbers below the cursor not seen yet, with when they were first missed.
    gaps: BTreeMap<i64, Instant>,
    interval: Duration,
    batch_len_max: usize,
}

impl Inbound {
    /// Reads changes after `cursor`: the newest change when the store was rebuilt.
    pub fn new(
        store: Arc<dyn AccountAdmin>,
        ledger: Arc<dyn Ledger>,
        catalog: Arc<SharedCatalog>,
        cursor: i64,
        interval: Duration,
        batch_len_max: usize,
    ) -> Inbound {
        Inbound {
            store,
            ledger,
            catalog,
            cursor,
            gaps: BTreeMap::new(),
            interval,
            batch_len_max,
        }
    }

    pub async fn run(mut self, mut shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if let Err(error) = self.poll().await {
                tracing::warn!(%error, "reading ledger changes failed; retrying");
            }
        }
    }

    /// Applies every change recorded since the last poll.
    pub async fn poll(&mut self) -> Result<usize, LedgerError> {
        let now = Instant::now();
        self.gaps
            .retain(|_, first_missed| now - *first_missed < GAP_WAIT);
        let gaps: Vec<i64> = self.gaps.keys().copied().collect();
        let changes = self
            .ledger
            .changes(self.cursor, &gaps, self.batch_len_max)
            .await?;
        let count = changes.len();
        let mut prices_changed = false;
        for change in changes {
            if change.seq > self.cursor {
                for missing in self.cursor + 1..change.seq {
                    if self.gaps.len() < GAPS_MAX {
                        self.gaps.insert(missing, now);
                    }
                }
                self.cursor = change.seq;
            } else {
                self.gaps.remove(&change.seq);
            }
            match change.kind {
                ChangeKind::Price => prices_changed = true,
                ChangeKind::Grant | ChangeKind::Void => self.apply_grant_change(&change).await?,
            }
        }
        if prices_changed {
            self.catalog
                .replace(Catalog::from_prices(self.ledger.prices().await?));
        }
        metrics::counter!(telemetry::INBOUND_CHANGES_TOTAL).increment(count as u64);
        Ok(count)
    }

    async fn apply_grant_change(&self, change: &Change) -> Result<(), LedgerError> {
        let Some(account) = &change.account else {
            return Ok(());
        };
        let Ok(grant_id) = GrantId::parse(&change.key) else {
            tracing::error!(key = %change.key, "ledger change names an invalid grant id");
            return Ok(());
        };
        let Some(grant) = self.ledger.grant(account, &grant_id).await? else {
            return Ok(());
        };
        let entry_id = entry_id::grant(account, &grant_id);
        let applied = match self
            .store
            .add_grant(account, grant.terms, entry_id.into())
            .await
        {
            Ok(_) if grant.voided_at_ms.is_some() => self
                .store
                .void_grant(
                    account,
                    &grant_id,
                    "voided in the ledger".into(),
                    entry_id::void(account, &grant_id),
                )
                .await
                .map(drop),
            other => other.map(drop),
        };
        match applied {
            Ok(()) => Ok(()),
            Err(error) if error.is_transient() => Err(LedgerError::Database(error.to_string())),
            Err(error) => {
                // A grant the store cannot take (conflicting terms, too many grants) would fail
                // the same way on every retry: report it and go on.
                tracing::error!(%account, grant = %grant_id, %error, "ledger grant not applied");
                metrics::counter!(telemetry::INBOUND_REJECTED_TOTAL).increment(1);
                Ok(())
            }
        }
    }
}

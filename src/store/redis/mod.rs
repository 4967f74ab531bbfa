//! `RedisStore`: the balance store shared by every replica, one Lua script per operation.
//!
//! Each balance-changing call is one script in `lua/`, atomic in Redis, which checks everything
//! before its first write, takes the time from Redis `TIME`, and appends the operation's
//! outbox entries to its partition's stream in the same step. Reserve, commit, release, extend
//! and charge calls of one partition that arrive together run in one `FCALL` (see [`batch`]),
//! which appends one record per account; every other call is an `FCALL` of its own. Replicas
//! consume the streams together through a consumer group. An account Redis does not have (a fresh or
//! restarted Redis) is loaded from the ledger by the hydrate script, which writes only if the
//! account is still absent, so replicas hydrating at once cannot add credit twice.
//!
//! Redis losing its keys (a restart without persistence, a failover to an empty replica,
//! `FLUSHALL`) is an event the store recovers from by itself. Each partition's *epoch* names the
//! incarnation of its keys and is stamped on its outbox records; an outbox found without its
//! consumer group is made again; the replica that makes it loads the partition's accounts with
//! open holds again ([`OutboxStore::heal`]); and an account is loaded under the epoch it will
//! live in, noted in the ledger, which from then on drops records of that account from a lost
//! epoch (see [`crate::record::AccountSource::load_for_store`]).
//!
//! Every call has a deadline; a call Redis does not answer in time fails with
//! [`StoreError::Unavailable`], which the gate turns into `UNAVAILABLE`: never an allow.

mod admin;
mod batch;
mod call;
mod charge;
mod check;
mod codec;
mod commit;
mod events;
mod expire;
mod extend;
pub mod keys;
mod outbox;
mod rebuild;
mod recovery;
mod release;
mod reserve;
mod scripts;
mod snapshot;

use self::recovery::{Healing, account_args, limits_json, postpaid_json};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use self::batch::Batches;
use self::call::Reply;
use self::keys::{AccountKeys, Partition};
use self::scripts::{Invocation, Scripts};
use super::{
    AccountAdmin, AccountSnapshot, AccountUpdate, AccountView, AlertsView, ChargeOp, ChargeReceipt,
    CheckReceipt, CommitOp, CommitReceipt, Decision, Denial, Durable, Expiry, ExtendOp,
    ExtendReceipt, GrantEntry, GrantReceipt, Idempotency, LimitChange, Rebuild, ReleaseReceipt,
    ReserveOp, ReserveReceipt, Spending, StoreError, Swept, VoidReceipt, WalletView, Written,
};
use crate::domain::alert::WalletAlerts;
use crate::domain::grant::GRANTS_PER_WALLET_MAX;
use crate::domain::limit::{LIMITS_PER_ACCOUNT_MAX, limit_id};
use crate::domain::{
    Account, AccountId, AccountStatus, DenyReason, FeatureId, Grant, GrantId, GrantTerms, Hold,
    HoldState, LimitState, Postpaid, ReservationId, Usage, WalletId,
};
use crate::record::AccountSource;

/// Consumer group of every replica's sync loop.
const GROUP: &str = "creditgate";

/// How to reach Redis and how to lay out the data.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// One URL, or several separated by commas for the nodes of a Redis Cluster.
    pub url: String,
    /// Starts every key, so deployments (or tests) can share a Redis; see [`keys`].
    pub namespace: String,
    /// Fixed for the life of a deployment: accounts are placed by it.
    pub partitions: u32,
    /// Deadline of every Redis call.
    pub timeout: Duration,
    /// How long ended holds and idempotent replies are kept.
    pub retention_ms: i64,
    /// Outbox records (over all partitions) kept for the ledger before writes are refused.
    pub outbox_len_max: usize,
    /// Outbox records another replica left unacknowledged this long are taken over.
    pub claim_idle_ms: u64,
    /// Tests only: a key holding the Unix time in milliseconds that the scripts read instead of
    /// Redis `TIME`, so that a test can move the store's clock as it moves a
    /// [`ManualClock`](crate::clock::ManualClock). A standalone Redis only: the key is read
    /// without being declared. `None` everywhere else.
    pub clock_key: Option<String>,
}

/// The shared balance store. See the module documentation.
pub struct RedisStore {
    /// For the subscription to wallet events (any node of a Cluster hears every message).
    client: redis::Client,
    connection: Connection,
    scripts: Scripts,
    settings: RedisSettings,
    /// Where an account Redis does not have is loaded from: the ledger.
    ledger: Arc<dyn AccountSource>,
    /// This replica's name in the consumer group.
    consumer: String,
    /// Where the next claim of abandoned outbox records starts, by partition.
    claim_cursors: Mutex<HashMap<u32, String>>,
    /// The partition the next outbox read starts at.
    next_partition: AtomicU32,
    /// Accounts being loaded from the ledger by a call of this replica, so that the calls
    /// that find one absent meanwhile wait for that load instead of each making their own.
    hydrating: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>,
    /// Partitions whose keys this replica made again after Redis lost them, whose accounts
    /// with open holds [`OutboxStore::heal`] has yet to load.
    healing: Mutex<Healing>,
    /// Every partition's queue of calls that go to Redis together.
    batches: Batches,
}

/// A multiplexed connection to one Redis, or to the nodes of a Redis Cluster (which routes each
/// command, and each script, by its first key).
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Why Redis cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to redis at {url}: {message}")]
    Connect { url: String, message: String },
    #[error(
        "redis at {url} has maxmemory-policy {policy}, which evicts keys and so would delete holds \
         and idempotency keys; set it to noeviction"
    )]
    Evicting { url: String, policy: String },
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

/// Records one partition's outbox may hold before writes are refused.
fn outbox_bound(settings: &RedisSettings) -> usize {
    (settings.outbox_len_max / settings.partitions as usize).max(1)
}

/// Runs `command`, a call of one of the library's functions, within `timeout`: loads the
/// library and tries again if Redis answers that the function is missing.
async fn call_function<T: redis::FromRedisValue>(
    connection: &Connection,
    library: &str,
    command: &redis::Cmd,
    timeout: Duration,
) -> Result<T, StoreError> {
    let mut connection = connection.clone();
    let call = async {
        match command.query_async::<T>(&mut connection).await {
            Err(error) if scripts::is_missing(&error) => {
                redis::cmd("FUNCTION")
                    .arg("LOAD")
                    .arg("REPLACE")
                    .arg(library)
                    .query_async::<()>(&mut connection)
                    .await?;
                command.query_async::<T>(&mut connection).await
            }
            answer => answer,
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(error_answer(&error.to_string())),
        Err(_) => Err(unavailable(format!("no answer within {timeout:?}"))),
    }
}

/// The error of a script that failed with `message`: one that refused its own arguments will
/// refuse them again, which is not transient.
fn error_answer(message: &str) -> StoreError {
    if message.contains("creditgate:") {
        StoreError::Inconsistent(message.to_owned())
    } else {
        unavailable(message)
    }
}

/// Refuses a script's answer that the partition's outbox is full: the ledger is behind.
fn full_outbox(reply: &[String], bound: usize) -> Result<(), StoreError> {
    if reply.first().map(String::as_str) == Some("full") {
        return Err(StoreError::Unavailable(format!(
            "the outbox holds {bound} records the ledger has not taken yet"
        )));
    }
    Ok(())
}

/// A script's `reason, available[, spend limit]`.
fn denial(reply: &[String]) -> Result<Denial, StoreError> {
    let (reason, available) = match reply {
        [reason, available, ..] => (reason.as_str(), available.as_str()),
        _ => {
            return Err(StoreError::Inconsistent(format!(
                "a denial without its reason: {reply:?}"
            )));
        }
    };
    let reason = match reason {
        "insufficient_credits" => DenyReason::InsufficientCredits,
        "feature_not_allowed" => DenyReason::FeatureNotAllowed,
        "account_suspended" => DenyReason::AccountSuspended,
        "spend_limit_reached" => DenyReason::SpendLimitReached,
        other => {
            return Err(StoreError::Inconsistent(format!(
                "unknown denial {other:?}"
            )));
        }
    };
    Ok(Denial {
        reason,
        available_minor: codec::int(available, "available")?,
        limit: reply.get(2).cloned(),
    })
}

/// The answer to a reserve or charge of an account neither Redis nor the ledger has.
fn absent<T>() -> Written<Decision<T>> {
    Written {
        value: Decision::Denied(account_not_found()),
        durable: Durable::Nothing,
    }
}

fn account_not_found() -> Denial {
    Denial {
        reason: DenyReason::AccountNotFound,
        available_minor: 0,
        limit: None,
    }
}

impl RedisStore {
    /// Connects, refuses a Redis that may evict keys, and makes the consumer group.
    pub async fn connect(
        settings: RedisSettings,
        ledger: Arc<dyn AccountSource>,
    ) -> Result<RedisStore, ConnectError> {
        let url = settings.url.clone();
        let connect_error = |message: String| ConnectError::Connect {
            url: url.clone(),
            message,
        };
        if !keys::valid_namespace(&settings.namespace) {
            return Err(connect_error(format!(
                "namespace {:?} must be 1-32 letters, digits, _ or -",
                settings.namespace
            )));
        }
        let urls: Vec<&str> = settings.url.split(',').map(str::trim).collect();
        let client = redis::Client::open(urls[0]).map_err(|e| connect_error(e.to_string()))?;
        let connecting = async {
            if urls.len() > 1 {
                let cluster = redis::cluster::ClusterClient::builder(urls.clone())
                    .connection_timeout(settings.timeout)
                    .response_timeout(settings.timeout)
                    .build()?;
                Ok(Connection::Cluster(cluster.get_async_connection().await?))
            } else {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.timeout))
                    .set_response_timeout(Some(settings.timeout))
                    .set_number_of_retries(1);
                Ok(Connection::Single(
                    ConnectionManager::new_with_config(client.clone(), config).await?,
                ))
            }
        };
        let connection = tokio::time::timeout(settings.timeout, connecting)
            .await
            .map_err(|_| connect_error(format!("no answer within {:?}", settings.timeout)))?
            .map_err(|e: redis::RedisError| connect_error(e.to_string()))?;
        let scripts = Scripts::new(settings.clock_key.as_deref());
        let batches = Batches::start(
            batch::Settings {
                connection: connection.clone(),
                library: scripts.library.clone(),
                function: scripts.batch.name().to_owned(),
                timeout: settings.timeout,
                outbox_bound: outbox_bound(&settings),
            },
            (0..settings.partitions).map(|index| Partition::new(&settings.namespace, index)),
        );
        let store = RedisStore {
            client,
            connection,
            scripts,
            batches,
            consumer: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            claim_cursors: Mutex::new(HashMap::new()),
            next_partition: AtomicU32::new(0),
            hydrating: Mutex::new(HashMap::new()),
            healing: Mutex::new(Healing::default()),
            settings,
            ledger,
        };
        store.refuse_eviction().await?;
        for partition in store.partitions() {
            store
                .make_group(&partition)
                .await
                .map_err(|e| connect_error(e.to_string()))?;
        }
        Ok(store)
    }

    async fn refuse_eviction(&self) -> Result<(), ConnectError> {
        let mut connection = self.connection.clone();
        let policy: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut connection)
            .await;
        match policy {
            Ok(pair) => match pair.get(1).map(String::as_str) {
                Some("noeviction") => Ok(()),
                Some(policy) => Err(ConnectError::Evicting {
                    url: self.settings.url.clone(),
                    policy: policy.to_owned(),
                }),
                None => Ok(()),
            },
            Err(error) => {
                tracing::warn!(%error, "cannot read redis maxmemory-policy; make sure it is noeviction");
                Ok(())
            }
        }
    }

    fn partitions(&self) -> impl Iterator<Item = Partition> + use<> {
        let namespace = self.settings.namespace.clone();
        (0..self.settings.partitions).map(move |index| Partition::new(&namespace, index))
    }

    fn keys(&self, account: &AccountId) -> AccountKeys {
        AccountKeys::new(&self.settings.namespace, account, self.settings.partitions)
    }

    /// Runs one Redis call within the deadline.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.settings.timeout, call(self.connection.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(unavailable(error)),
            Err(_) => Err(unavailable(format!(
                "no answer within {:?}",
                self.settings.timeout
            ))),
        }
    }

    /// Runs one script: in its partition's next batch if it may join one (see [`batch`]).
    async fn invoke(&self, invocation: Invocation<'_>) -> Result<Reply, StoreError> {
        let invocation = match invocation.into_batched() {
            Ok(call) => return self.batches.call(call, self.settings.timeout).await,
            Err(alone) => alone,
        };
        let reply: Vec<String> = call_function(
            &self.connection,
            &self.scripts.library,
            &invocation.command(),
            self.settings.timeout,
        )
        .await?;
        full_outbox(&reply, self.outbox_bound())?;
        Ok(Reply::alone(reply))
    }

    /// A call of a script that changes one account: KEYS the account's hash, its partition's
    /// outbox and `third` (the partition's expiries for a hold's script, its set of accounts for
    /// an admin script that may create the account); ARGV the account's key base and its id, to
    /// which the caller adds the script's own.
    fn account_call<'a>(
        &self,
        function: &'a scripts::Function,
        keys: &AccountKeys,
        account: &AccountId,
        third: String,
    ) -> Invocation<'a> {
        let mut invocation = function.prepare_invoke();
        invocation
            .key(keys.account())
            .key(keys.partition.outbox())
            .key(third)
            .arg(&keys.base)
            .arg(account.as_str())
            .in_partition(keys.partition.index);
        invocation
    }

    /// A call of a hold's script (reserve, commit, release, extend): [`Self::account_call`]
    /// with the partition's expiries, then the retention.
    fn hold_call<'a>(
        &self,
        function: &'a scripts::Function,
        keys: &AccountKeys,
        account: &AccountId,
    ) -> Invocation<'a> {
        let mut invocation = self.account_call(function, keys, account, keys.partition.expiries());
        invocation.arg(self.retention());
        invocation
    }

    /// Records one partition's outbox may hold before writes are refused.
    fn outbox_bound(&self) -> usize {
        outbox_bound(&self.settings)
    }

    fn retention(&self) -> String {
        self.settings.retention_ms.to_string()
    }

    /// Runs a script for an account, loading the account from the ledger first if Redis does
    /// not have it. `None` means neither has it.
    async fn with_account<'a, F>(
        &'a self,
        account: &AccountId,
        run: F,
    ) -> Result<Option<Reply>, StoreError>
    where
        F: Fn() -> Invocation<'a>,
    {
        let reply = self.invoke(run()).await?;
        if reply.first().map(String::as_str) != Some("absent") {
            return Ok(Some(reply));
        }
        if !self.hydrate(account).await? {
            return Ok(None);
        }
        let reply = self.invoke(run()).await?;
        if reply.first().map(String::as_str) == Some("absent") {
            return Err(StoreError::Inconsistent(format!(
                "account {account} is still absent after loading it"
            )));
        }
        Ok(Some(reply))
    }

    /// Runs a script that may create the account: as for any script if Redis or the ledger has
    /// the account, else again with the script told (`run("1")`) to create it.
    async fn with_account_or_create<'a, F>(
        &'a self,
        account: &AccountId,
        run: F,
    ) -> Result<Reply, StoreError>
    where
        F: Fn(&'static str) -> Invocation<'a>,
    {
        match self.with_account(account, || run("0")).await? {
            Some(reply) => Ok(reply),
            None => self.invoke(run("1")).await,
        }
    }

    fn conflict<T>(key: Option<&super::Idempotency>) -> Result<T, StoreError> {
        Err(StoreError::IdempotencyConflict {
            key: key
                .map(|i| i.key.clone())
                .expect("conflicts only with a key"),
        })
    }

    fn ended_hold(id: &ReservationId, reply: &[String]) -> StoreError {
        match reply.first().map(String::as_str) {
            Some("not_found") => StoreError::ReservationNotFound(id.clone()),
            Some("ended") => {
                let state = match reply.get(1).map(String::as_str) {
                    Some("committed") => HoldState::Committed,
                    Some("released") => HoldState::Released,
                    _ => HoldState::Expired,
                };
                StoreError::ReservationEnded {
                    id: id.clone(),
                    state,
                }
            }
            _ => StoreError::Inconsistent(format!("unexpected reply {reply:?}")),
        }
    }
}

/// What a repeated release or extend waits for: the ledger to have the hold's version.
fn repeated_hold(id: &ReservationId, version: Option<&String>) -> Durable {
    match version.and_then(|v| v.parse().ok()) {
        Some(version) => Durable::HoldVersion {
            id: id.clone(),
            version,
        },
        None => Durable::Nothing,
    }
}

/// The key and fingerprint arguments of a call, empty without an idempotency key.
fn idempotency_args(idempotency: Option<&Idempotency>) -> (String, String) {
    idempotency
        .map(|i| (i.key.as_str().to_owned(), i.fingerprint.clone()))
        .unwrap_or_default()
}

/// The usage (JSON) and model arguments of a call, empty without usage.
fn usage_args(usage: Option<&Usage>) -> (String, String) {
    let Some(usage) = usage else {
        return Default::default();
    };
    (
        serde_json::to_string(usage).expect("usage serialises"),
        usage
            .model
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

/// What a script that decides (reserve, extend, charge) answered: allowed (its record to make
/// durable), a repeat of the first answer, a denial, or an idempotency key reused. `None` for
/// any other answer, which the caller reads.
fn decided<T>(
    reply: &[String],
    record: impl FnOnce() -> Result<Durable, StoreError>,
    parse: impl FnOnce(&str) -> Result<T, StoreError>,
    repeated: impl FnOnce(&T) -> Durable,
    idempotency: Option<&Idempotency>,
) -> Option<Result<Written<Decision<T>>, StoreError>> {
    let answer = || -> Result<Written<Decision<T>>, StoreError> {
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Written {
                value: Decision::Allowed(parse(&reply[1])?),
                durable: record()?,
            }),
            Some("replay") => {
                let value = parse(&reply[1])?;
                Ok(Written {
                    durable: repeated(&value),
                    value: Decision::Allowed(value),
                })
            }
            Some("denied") => Ok(Written {
                value: Decision::Denied(denial(&reply[1..])?),
                durable: Durable::Nothing,
            }),
            _ => RedisStore::conflict(idempotency),
        }
    };
    match reply.first().map(String::as_str) {
        Some("ok" | "replay" | "denied" | "conflict") => Some(answer()),
        _ => None,
    }
}

fn labels_json(labels: &crate::domain::Labels) -> String {
    serde_json::to_string(labels).expect("labels serialise")
}

#[async_trait]
impl Spending for RedisStore {
    async fn now_ms(&self) -> Result<i64, StoreError> {
        if let Some(key) = self.settings.clock_key.clone() {
            let now: Option<i64> = self
                .call(|mut c| {
                    let key = key.clone();
                    async move { c.get(key).await }
                })
                .await?;
            if let Some(now) = now {
                return Ok(now);
            }
        }
        let (seconds, micros): (i64, i64) = self
            .call(|mut c| async move { redis::cmd("TIME").query_async(&mut c).await })
            .await?;
        Ok(seconds * 1_000 + micros / 1_000)
    }

    async fn reserve(
        &self,
        op: ReserveOp,
    ) -> Result<Written<Decision<ReserveReceipt>>, StoreError> {
        reserve::apply(self, op).await
    }

    async fn commit(&self, op: CommitOp) -> Result<Written<CommitReceipt>, StoreError> {
        commit::apply(self, op).await
    }

    async fn release(&self, id: &ReservationId) -> Result<Written<ReleaseReceipt>, StoreError> {
        release::apply(self, id).await
    }

    async fn extend(&self, op: ExtendOp) -> Result<Written<Decision<ExtendReceipt>>, StoreError> {
        extend::apply(self, op).await
    }

    async fn charge(&self, op: ChargeOp) -> Result<Written<Decision<ChargeReceipt>>, StoreError> {
        charge::apply(self, op).await
    }

    async fn check(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        feature: &FeatureId,
        amount_minor: i64,
        labels: &crate::domain::Labels,
    ) -> Result<Decision<CheckReceipt>, StoreError> {
        check::apply(self, account, wallet, feature, amount_minor, labels).await
    }

    async fn hold(&self, id: &ReservationId) -> Result<Option<Hold>, StoreError> {
        let Some((snapshot, _)) = self.snapshot_of(id.account()).await? else {
            return Ok(None);
        };
        if let Some(hold) = snapshot.holds.into_iter().find(|h| &h.id == id) {
            return Ok(Some(hold));
        }
        // Ended holds are not in the snapshot; read the hold itself.
        let key = self.keys(id.account()).hold(id.token());
        let fields: HashMap<String, String> = self
            .call(|mut c| async move { c.hgetall(key).await })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        codec::hold_from_fields(id.account(), id.token(), &fields).map(Some)
    }

    async fn balance(&self, account: &AccountId) -> Result<Option<AccountView>, StoreError> {
        let Some((snapshot, now)) = self.snapshot_of(account).await? else {
            return Ok(None);
        };
        let mut wallets: BTreeMap<WalletId, Vec<Grant>> = BTreeMap::new();
        let postpaid: BTreeMap<WalletId, Postpaid> = snapshot.postpaid.into_iter().collect();
        let alerts: BTreeMap<WalletId, AlertsView> = snapshot
            .alerts
            .into_iter()
            .map(|a| {
                let view = AlertsView {
                    alerts: a.alerts,
                    armed: a.armed,
                    open_top_up: a.open_top_up,
                };
                (a.wallet, view)
            })
            .collect();
        for wallet in postpaid.keys().chain(alerts.keys()) {
            wallets.entry(wallet.clone()).or_default();
        }
        for mut grant in snapshot.grants {
            // As a script would see it now: reset if due.
            grant.roll(now);
            if grant.is_active(now) || grant.held_minor > 0 {
                wallets
                    .entry(grant.terms.wallet.clone())
                    .or_default()
                    .push(grant);
            } else {
                wallets.entry(grant.terms.wallet.clone()).or_default();
            }
        }
        wallets.entry(WalletId::default_wallet()).or_default();
        for grants in wallets.values_mut() {
            grants.sort_by_key(|g| (g.created_at_ms, g.terms.id.clone()));
        }
        Ok(Some(AccountView {
            account: snapshot.account.expect("snapshots have their account"),
            wallets: wallets
                .into_iter()
                .map(|(wallet, grants)| WalletView {
                    postpaid: postpaid.get(&wallet).copied().unwrap_or_default(),
                    alerts: alerts.get(&wallet).cloned(),
                    wallet,
                    grants,
                })
                .collect(),
            limits: snapshot.limits.iter().map(|l| l.at(now)).collect(),
            now_ms: now,
        }))
    }
}

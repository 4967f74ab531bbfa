//! Wires the parts together and runs them: ledger, store rebuilt from it, gate, sync loop,
//! sweeper, webhook sender, and the two gRPC services, until shutdown.
//!
//! Shutdown happens in two steps: the services stop taking calls and finish the ones in flight
//! (within the grace period); then the sync loop flushes the outbox once more and the ledger is
//! closed, so that nothing a call acknowledged is left behind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::api::admin::AdminService;
use crate::api::ext_authz::ExtAuthzService;
use crate::api::gate::GateService;
use crate::cache::{HOLDS_MAX_DEFAULT, ReservationCache};
use crate::catalog::{Catalog, SharedCatalog};
use crate::clock::Clock;
use crate::config::{CommitDurability, ServerConfig, TlsConfig};
use crate::events::Events;
use crate::gate::Gate;
use crate::ledger::sql::SqlLedger;
use crate::ledger::{Ledger, LedgerError};
use crate::reconcile::Reconciler;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::store::memory::MemoryStore;
use crate::store::redis::{RedisSettings, RedisStore};
use crate::store::{BalanceStore, Rebuild, StoreError};
use crate::sync::{self, Inbound, LedgerWriter, SyncLoop};
use crate::telemetry::CallLayer;
use crate::webhooks::{Sender, Webhook};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

/// Largest request message accepted, in bytes.
pub const REQUEST_LEN_MAX: usize = 64 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server. Dropping it without [`Server::stop`] leaves its tasks to the runtime.
pub struct Server {
    gate_addr: SocketAddr,
    admin_addr: SocketAddr,
    ext_authz_addr: Option<SocketAddr>,
    stop_serving: ShutdownTrigger,
    stop_background: ShutdownTrigger,
    services: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    ledger: SqlLedger,
    store: Arc<dyn BalanceStore>,
    grace: Duration,
    events: Events,
}

/// Calls arriving on `listener`, on connections that send small answers at once (no Nagle
/// delay: an answer is a few hundred bytes and its client is waiting for it).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// The TLS settings of every gRPC port, from the PEM files the config names.
fn server_tls(tls: &TlsConfig) -> Result<ServerTlsConfig, StartError> {
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            StartError::Config(format!("tls.{field}: cannot read {}: {e}", path.display()))
        })
    };
    let identity = Identity::from_pem(read("cert", &tls.cert)?, read("key", &tls.key)?);
    let mut server = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        server = server
            .client_ca_root(Certificate::from_pem(read("client_ca", ca)?))
            .client_auth_optional(false);
    }
    Ok(server)
}

/// How often health checks that the store and the ledger answer.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps the health service's answer current: serving while the store and the ledger answer
/// within [`HEALTH_INTERVAL`], not serving otherwise, and not serving once shutdown begins.
/// Samples the cache's size for the metrics on the way.
async fn watch_health(
    health: HealthReporter,
    services: Vec<&'static str>,
    (store, ledger, cache): (
        Arc<dyn BalanceStore>,
        Arc<dyn Ledger>,
        Arc<ReservationCache>,
    ),
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    let mut serving = true;
    loop {
        tokio::select! {
            _ = shutdown.wait() => {
                for service in &services {
                    health.set_service_status(*service, ServingStatus::NotServing).await;
                }
                return;
            }
            _ = tick.tick() => {}
        }
        metrics::gauge!(crate::telemetry::CACHE_HOLDS).set(cache.len() as f64);
        let store_answers = tokio::time::timeout(HEALTH_INTERVAL, store.now_ms())
            .await
            .is_ok_and(|answer| answer.is_ok());
        let ledger_answers = tokio::time::timeout(HEALTH_INTERVAL, ledger.last_change())
            .await
            .is_ok_and(|answer| answer.is_ok());
        let now_serving = store_answers && ledger_answers;
        if now_serving != serving {
            serving = now_serving;
            tracing::warn!(store_answers, ledger_answers, serving, "health changed");
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in &services {
                health.set_service_status(*service, status).await;
            }
        }
    }
}

/// Connects to the ledger (migrating it if the settings say so), with the webhooks it sends
/// events to.
async fn open_ledger(config: &ServerConfig) -> Result<SqlLedger, StartError> {
    let ledger = SqlLedger::connect(
        &config.ledger,
        Duration::from_millis(config.limits.ledger_timeout_ms),
    )
    .await?
    .with_webhooks(config.webhooks.iter().map(Webhook::route).collect());
    if config.migrate {
        ledger.migrate().await?;
    }
    Ok(ledger)
}

/// The balance store the settings name: Redis, which loads the accounts it lacks from the ledger
/// on use (returned twice, the second time as itself, for its wallet events); or the
/// in-process store, rebuilt from the ledger now.
async fn open_store(
    config: &ServerConfig,
    ledger: &Arc<dyn Ledger>,
    clock: &Arc<dyn Clock>,
    events: &Events,
) -> Result<(Arc<dyn BalanceStore>, Option<Arc<RedisStore>>), StartError> {
    let retention_ms = config.limits.idempotency_ttl_ms as i64;
    match &config.redis {
        Some(url) => {
            let settings = RedisSettings {
                url: url.clone(),
                namespace: config.redis_namespace.clone(),
                partitions: config.limits.redis_partitions,
                timeout: Duration::from_millis(config.limits.redis_timeout_ms),
                retention_ms,
                outbox_len_max: config.limits.outbox_len_max,
                claim_idle_ms: config.limits.outbox_claim_idle_ms,
                clock_key: None,
            };
            let store = Arc::new(
                RedisStore::connect(settings, ledger.clone())
                    .await
                    .map_err(|e| StartError::Config(e.to_string()))?,
            );
            Ok((store.clone(), Some(store)))
        }
        None => {
            let store =
                MemoryStore::with_outbox_len_max(clock.clone(), config.limits.outbox_len_max)
                    .with_events(events.clone());
            let accounts = ledger
                .load_accounts(None, clock.now_ms(), retention_ms)
                .await?;
            tracing::info!(accounts = accounts.len(), "store rebuilt from the ledger");
            store.load(accounts).await?;
            Ok((Arc::new(store), None))
        }
    }
}

/// The ports the server listens on, bound before it serves so that a taken port fails the
/// start.
struct Listeners {
    gate: TcpListener,
    admin: TcpListener,
    ext_authz: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &ServerConfig) -> Result<Listeners, StartError> {
        Ok(Listeners {
            gate: bind(config.listen).await?,
            admin: bind(config.admin_listen).await?,
            ext_authz: match config.ext_authz_listen {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
        })
    }

    /// The addresses bound: the gate's, the admin's and the ext_authz's.
    fn addrs(
        &self,
        config: &ServerConfig,
    ) -> Result<(SocketAddr, SocketAddr, Option<SocketAddr>), StartError> {
        let local = |listener: &TcpListener, addr: SocketAddr| {
            listener
                .local_addr()
                .map_err(|source| StartError::Listen { addr, source })
        };
        let ext_authz = match (&self.ext_authz, config.ext_authz_listen) {
            (Some(listener), Some(addr)) => Some(local(listener, addr)?),
            _ => None,
        };
        Ok((
            local(&self.gate, config.listen)?,
            local(&self.admin, config.admin_listen)?,
            ext_authz,
        ))
    }
}

/// Everything the server runs, built (and the ledger and the store opened) before any of it
/// runs.
struct Parts {
    ledger: SqlLedger,
    store: Arc<dyn BalanceStore>,
    /// The store again when it is Redis, for its wallet events.
    redis_store: Option<Arc<RedisStore>>,
    events: Events,
    cache: Arc<ReservationCache>,
    gate: Arc<Gate>,
    reconciler: Arc<Reconciler>,
    sync_loop: SyncLoop,
    ledger_writer: LedgerWriter,
    inbound: Inbound,
    webhooks: Option<Sender>,
}

impl Parts {
    async fn build(config: &ServerConfig, clock: &Arc<dyn Clock>) -> Result<Parts, StartError> {
        let ledger = open_ledger(config).await?;
        let ledger_dyn: Arc<dyn Ledger> = Arc::new(ledger.clone());
        // Read before the accounts: a change made meanwhile is applied again, harmlessly.
        let change_cursor = ledger.last_change().await?;
        let cache = Arc::new(ReservationCache::new(HOLDS_MAX_DEFAULT));
        let events = Events::default();
        let (store, redis_store) = open_store(config, &ledger_dyn, clock, &events).await?;
        if !config.prices.is_empty() {
            ledger.put_prices(&config.prices, clock.now_ms()).await?;
        }
        let catalog = Catalog::from_prices(ledger.prices().await?);
        tracing::info!(
            prices = catalog.len(),
            ledger = %config.ledger.describe(),
            store = if config.redis.is_some() { "redis" } else { "memory" },
            "creditgate starting"
        );
        let settings = config.sync_settings();
        let ledger_timeout = Duration::from_millis(config.limits.ledger_timeout_ms);
        let (sync_loop, durability, ledger_writer) = SyncLoop::new(
            store.clone(),
            ledger_dyn.clone(),
            settings.clone(),
            ledger_timeout,
        );
        let catalog = Arc::new(SharedCatalog::new(catalog));
        let inbound = Inbound::new(
            store.clone(),
            ledger_dyn.clone(),
            catalog.clone(),
            change_cursor,
            Duration::from_millis(config.limits.inbound_interval_ms),
            settings.batch_len_max,
        );
        let reconciler = Arc::new(Reconciler::new(
            store.clone(),
            ledger_dyn.clone(),
            durability.clone(),
            config.limits.idempotency_ttl_ms as i64,
            // As long as a caller waits for the ledger.
            ledger_timeout,
        ));
        let webhooks = (!config.webhooks.is_empty()).then(|| {
            Sender::new(
                ledger_dyn.clone(),
                clock.clone(),
                config.webhooks.clone(),
                config.webhook_settings(),
            )
        });
        let acknowledge_after_ledger = config.commit_durability == CommitDurability::Ledger;
        let gate = Arc::new(Gate::new(
            store.clone(),
            clock.clone(),
            ledger_dyn,
            catalog,
            acknowledge_after_ledger.then_some(durability),
            config.gate_limits(),
            cache.clone(),
        ));
        Ok(Parts {
            ledger,
            store,
            redis_store,
            events,
            cache,
            gate,
            reconciler,
            sync_loop,
            ledger_writer,
            inbound,
            webhooks,
        })
    }

    /// Starts the work behind the services: the sync loop and the ledger writer, changes made
    /// directly in the ledger, reconcile, the sweep, webhooks, and on Redis the wallet events.
    fn spawn_background(self, config: &ServerConfig, shutdown: &Shutdown) -> Running {
        let settings = config.sync_settings();
        let reconcile_interval = Duration::from_millis(config.limits.reconcile_interval_ms);
        let reconciler = self.reconciler.clone();
        let reconcile_shutdown = shutdown.clone();
        let mut background = vec![
            tokio::spawn(self.sync_loop.run(shutdown.clone())),
            tokio::spawn(self.ledger_writer.run(shutdown.clone())),
            tokio::spawn(self.inbound.run(shutdown.clone())),
            tokio::spawn(
                async move { reconciler.run(reconcile_interval, reconcile_shutdown).await },
            ),
            tokio::spawn(sync::sweep(self.store.clone(), settings, shutdown.clone())),
        ];
        if let Some(sender) = self.webhooks {
            background.push(tokio::spawn(sender.run(shutdown.clone())));
        }
        if let Some(redis) = self.redis_store {
            // Other replicas' wallets running out reach this one's cache through the events.
            background.push(tokio::spawn(
                self.cache.clone().follow(&self.events, shutdown.clone()),
            ));
            let (events, shutdown) = (self.events.clone(), shutdown.clone());
            background.push(tokio::spawn(async move {
                redis.watch_wallets(events, shutdown).await
            }));
        }
        Running {
            ledger: self.ledger,
            store: self.store,
            events: self.events,
            cache: self.cache,
            gate: self.gate,
            reconciler: self.reconciler,
            background,
        }
    }
}

/// The parts still needed once the background work runs: by the services, and to stop.
struct Running {
    ledger: SqlLedger,
    store: Arc<dyn BalanceStore>,
    events: Events,
    cache: Arc<ReservationCache>,
    gate: Arc<Gate>,
    reconciler: Arc<Reconciler>,
    background: Vec<JoinHandle<()>>,
}

/// Health on every port: serving while the store and the ledger answer, and not once stopping.
/// Returns the service and the task that keeps its answer current.
async fn health(
    running: &Running,
    ext_authz: bool,
    shutdown: Shutdown,
) -> (HealthServer<impl Health>, JoinHandle<()>) {
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut watched = vec!["", "creditgate.v1.Gate", "creditgate.v1.Admin"];
    if ext_authz {
        watched.push("envoy.service.auth.v3.Authorization");
    }
    // Both answered while starting.
    for service in &watched {
        health
            .set_service_status(*service, ServingStatus::Serving)
            .await;
    }
    let watching = tokio::spawn(watch_health(
        health,
        watched,
        (
            running.store.clone(),
            Arc::new(running.ledger.clone()),
            running.cache.clone(),
        ),
        shutdown,
    ));
    (health_service, watching)
}

/// Serves the gate, admin and (if configured) ext_authz ports until `shutdown`, each with
/// health and the gRPC reflection services.
fn serve(
    config: &ServerConfig,
    running: &Running,
    listeners: Listeners,
    health: HealthServer<impl Health>,
    shutdown: &Shutdown,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let policy = Arc::new(config.policy.clone());
    if policy.is_on() && config.tls.is_none() {
        tracing::warn!("callers present bearer tokens over plain text: set up TLS");
    }
    let gate = &running.gate;
    let gate_service = GateService::new(
        gate.clone(),
        running.events.clone(),
        policy.clone(),
        shutdown.clone(),
    )
    .into_server()
    .max_decoding_message_size(REQUEST_LEN_MAX);
    let ext_authz_service =
        ExtAuthzService::new(gate.clone(), config.ext_authz.clone(), policy.clone())
            .into_server()
            .max_decoding_message_size(REQUEST_LEN_MAX);
    let admin_service = AdminService::new(gate.clone(), running.reconciler.clone(), policy)
        .into_server()
        .max_decoding_message_size(REQUEST_LEN_MAX);
    let streams = config.limits.max_concurrent_streams;
    let tls = config.tls.as_ref().map(server_tls).transpose()?;
    let server = || -> Result<tonic::transport::Server, StartError> {
        let server = tonic::transport::Server::builder();
        let server = match tls.clone() {
            Some(tls) => server
                .tls_config(tls)
                .map_err(|e| StartError::Config(format!("tls: {e}")))?,
            None => server,
        };
        Ok(server.max_concurrent_streams(Some(streams)))
    };
    let until = |mut shutdown: Shutdown| async move { shutdown.wait().await };
    let mut services = vec![
        spawn_serving(
            "gate",
            server()?
                .layer(CallLayer)
                .add_service(gate_service)
                .add_service(health.clone())
                .add_service(reflection_v1.clone())
                .add_service(reflection_v1alpha.clone())
                .serve_with_incoming_shutdown(incoming(listeners.gate), until(shutdown.clone())),
        ),
        spawn_serving(
            "admin",
            server()?
                .layer(CallLayer)
                .add_service(admin_service)
                .add_service(health.clone())
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .serve_with_incoming_shutdown(incoming(listeners.admin), until(shutdown.clone())),
        ),
    ];
    if let Some(listener) = listeners.ext_authz {
        services.push(spawn_serving(
            "ext_authz",
            server()?
                .layer(CallLayer)
                .add_service(ext_authz_service)
                .add_service(health)
                .serve_with_incoming_shutdown(incoming(listener), until(shutdown.clone())),
        ));
    }
    Ok(services)
}

/// Runs one port's serving, logging why it ended if it failed.
fn spawn_serving(
    name: &'static str,
    serving: impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = serving.await {
            tracing::error!(%error, service = name, "service failed");
        }
    })
}

impl Server {
    /// Opens the ledger, rebuilds the store from it, and starts serving.
    pub async fn start(config: ServerConfig, clock: Arc<dyn Clock>) -> Result<Server, StartError> {
        if config.commit_durability == CommitDurability::Store && config.redis.is_none() {
            // Memory alone is not durable: acknowledging before the ledger has a commit could
            // lose it in a crash.
            return Err(StartError::Config(
                "commit_durability = store needs the Redis store (--redis); the in-process store \
                 always acknowledges once the ledger has the write"
                    .into(),
            ));
        }
        let parts = Parts::build(&config, &clock).await?;
        if let Some(addr) = config.metrics_listen {
            crate::telemetry::serve_metrics(addr).map_err(|e| StartError::Config(e.to_string()))?;
            tracing::info!(%addr, "serving /metrics");
        }
        let listeners = Listeners::bind(&config).await?;
        let (gate_addr, admin_addr, ext_authz_addr) = listeners.addrs(&config)?;
        let (stop_background, background_shutdown) = shutdown::channel();
        let mut running = parts.spawn_background(&config, &background_shutdown);
        let (stop_serving, serving_shutdown) = shutdown::channel();
        let (health, watching) = health(
            &running,
            listeners.ext_authz.is_some(),
            serving_shutdown.clone(),
        )
        .await;
        running.background.push(watching);
        let services = serve(&config, &running, listeners, health, &serving_shutdown)?;
        tracing::info!(%gate_addr, %admin_addr, ?ext_authz_addr, "creditgate serving");
        Ok(Server {
            gate_addr,
            admin_addr,
            ext_authz_addr,
            stop_serving,
            stop_background,
            services,
            background: running.background,
            ledger: running.ledger,
            store: running.store,
            grace: Duration::from_millis(config.limits.shutdown_grace_ms),
            events: running.events,
        })
    }

    /// Address the gate service listens on.
    pub fn gate_addr(&self) -> SocketAddr {
        self.gate_addr
    }

    /// Address the Envoy external authorizer listens on, if it is served.
    pub fn ext_authz_addr(&self) -> Option<SocketAddr> {
        self.ext_authz_addr
    }

    /// Open `WatchBalance` streams.
    pub fn watchers(&self) -> usize {
        self.events.subscribers()
    }

    /// Address the admin service listens on.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Outbox records the ledger does not have yet.
    pub async fn outbox_records(&self) -> Result<usize, StoreError> {
        Ok(self.store.outbox_stats().await?.records)
    }

    /// Stops taking calls, finishes those in flight within the grace period, flushes the
    /// outbox to the ledger and closes it.
    pub async fn stop(self) {
        self.stop_serving.fire();
        let deadline = tokio::time::Instant::now() + self.grace;
        for mut service in self.services {
            if tokio::time::timeout_at(deadline, &mut service)
                .await
                .is_err()
            {
                tracing::warn!(grace = ?self.grace, "calls still in flight after the grace period");
                service.abort();
            }
        }
        self.stop_background.fire();
        for task in self.background {
            let _ = task.await;
        }
        self.ledger.close().await;
        tracing::info!("creditgate stopped");
    }
}

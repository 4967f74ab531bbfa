//! The `creditgate` command: parse, dispatch.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use creditgate::cli::args::*;
use creditgate::cli::{
    self, Answer, ChargeCall, CliError, GrantCall, Overrun, PriceCall, ReserveCall, UsageCall,
};
use creditgate::clock::SystemClock;
use creditgate::config::{FileConfig, Flags, ServerConfig, TlsConfig};
use creditgate::proto::StopRule;
use creditgate::server::Server;
use creditgate::telemetry::Traces;

#[global_allocator]
static ALLOCATOR: creditgate::alloc::Allocator = creditgate::alloc::Allocator;

/// Logs on stderr, at the level `RUST_LOG` says (default `info`), and the spans of calls to
/// the collector if there is one.
fn init_logging(format: LogFormat, traces: Option<&Traces>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        // One JSON object a line, with the call's span (method and request id) in each.
        LogFormat::Json => logs.json().with_current_span(true).boxed(),
    };
    let spans = traces.map(|traces| tracing_opentelemetry::layer().with_tracer(traces.tracer()));
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .init();
}

/// Takes over SIGTERM and Ctrl-C at once (before the server starts listening, so that a
/// signal that comes early still stops it cleanly); the future resolves on either.
fn termination() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut interrupt) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        );
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn resolve(ledger: LedgerArgs, flags: Flags) -> Result<ServerConfig, Box<dyn std::error::Error>> {
    let file = match &ledger.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let flags = Flags {
        data_dir: ledger.data_dir,
        ledger: ledger.ledger,
        ..flags
    };
    Ok(ServerConfig::resolve(flags, file)?)
}

async fn migrate(args: LedgerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = resolve(args, Flags::default())?;
    let ledger = creditgate::ledger::sql::SqlLedger::connect(
        &config.ledger,
        std::time::Duration::from_millis(config.limits.ledger_timeout_ms),
    )
    .await?;
    ledger.migrate().await?;
    ledger.close().await;
    println!("ledger {} is up to date", config.ledger.describe());
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let flags = Flags {
        listen: args.listen,
        admin_listen: args.admin_listen,
        metrics_listen: args.metrics_listen,
        ext_authz_listen: args.ext_authz_listen,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert,
                key,
                client_ca: args.tls_client_ca,
            }),
            _ => None,
        },
        commit_durability: args.commit_durability,
        no_migrate: args.no_migrate,
        redis: args.redis,
        otlp_endpoint: args.otlp_endpoint,
        otlp_sample_ratio: args.otlp_sample_ratio,
        ..Flags::default()
    };
    let config = resolve(args.ledger, flags)?;
    if args.check_config {
        println!(
            "config ok: gate {}, admin {}, ledger {}, store {}, {} prices, {} webhooks, {}",
            config.listen,
            config.admin_listen,
            config.ledger.describe(),
            if config.redis.is_some() {
                "redis"
            } else {
                "memory"
            },
            config.prices.len(),
            config.webhooks.len(),
            if config.policy.is_on() {
                "callers checked"
            } else {
                "every caller served"
            },
        );
        return Ok(());
    }
    let traces = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| Traces::otlp(endpoint, config.otlp_sample_ratio))
        .transpose()?;
    init_logging(args.log_format, traces.as_ref());
    let terminated = termination()?;
    let server = Server::start(config, Arc::new(SystemClock)).await?;
    terminated.await;
    tracing::info!("shutting down");
    server.stop().await;
    if let Some(traces) = traces {
        traces.shutdown();
    }
    Ok(())
}

/// What a client subcommand answered, printed (as JSON if asked); exit 2 for a denial.
fn answered(json: bool, answer: Result<Answer, CliError>) -> ExitCode {
    match answer {
        Ok(answer) => {
            cli::print(&answer, json);
            if answer.denied {
                ExitCode::from(cli::EXIT_DENIED as u8)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => failed(error),
    }
}

/// Exit 0, or the error on stderr and the failure status.
fn finish<E: std::fmt::Display>(done: Result<(), E>) -> ExitCode {
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => failed(error),
    }
}

fn failed(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("creditgate: {error}");
    ExitCode::from(cli::EXIT_FAILED as u8)
}

async fn grant(a: GrantArgs) -> Result<Answer, CliError> {
    let expires_at_ms = match (a.expires_in, a.expires_at_ms) {
        (Some(ms), _) => {
            let ms = i64::try_from(ms)
                .map_err(|_| CliError::Usage("--expires-in is too long".into()))?;
            creditgate::clock::Clock::now_ms(&SystemClock).saturating_add(ms)
        }
        (None, Some(at)) => at,
        (None, None) => 0,
    };
    let call = GrantCall {
        account: a.account,
        grant_id: a
            .grant_id
            .unwrap_or_else(|| format!("g{}", uuid::Uuid::new_v4().simple())),
        wallet: a.wallet,
        amount: a.amount,
        kind: a.kind,
        priority: a.priority.unwrap_or(0),
        expires_at_ms,
        features: a.features,
        period: a.period,
        period_anchor_ms: a.period_anchor_ms.unwrap_or(0),
        rollover_max: a.rollover_max.unwrap_or_default(),
        reason: a.reason.unwrap_or_default(),
        refund_of: a.refund_of.unwrap_or_default(),
        top_up_request_id: a.top_up_request.unwrap_or_default(),
    };
    cli::grant(&a.connection, call).await
}

async fn reserve(a: ReserveArgs) -> Result<Answer, CliError> {
    let call = ReserveCall {
        partial_min: a.partial_min,
        account: a.target.account,
        feature: a.target.feature,
        wallet: a.target.wallet,
        cost: a.cost,
        ttl_ms: a.ttl.unwrap_or(0),
        idempotency_key: a.idempotency_key,
        labels: a.labels,
    };
    cli::reserve(&a.connection, call).await
}

async fn charge(a: ChargeArgs) -> Result<Answer, CliError> {
    let call = ChargeCall {
        account: a.target.account,
        feature: a.target.feature,
        wallet: a.target.wallet,
        cost: a.cost,
        idempotency_key: a.idempotency_key,
        labels: a.labels,
    };
    cli::charge(&a.connection, call).await
}

async fn price_set(a: PriceSetArgs) -> Result<Answer, CliError> {
    let price = match (a.flat, a.per_unit, a.unit, a.model) {
        (Some(flat), _, _, _) => PriceCall::Flat(flat),
        (None, Some(price), Some(unit), _) => PriceCall::PerUnit { unit, price },
        (None, None, _, Some(model)) => PriceCall::Model {
            model,
            input: a.input_per_1m.unwrap_or_default(),
            output: a.output_per_1m.unwrap_or_default(),
            cached_input: a.cached_input_per_1m,
        },
        _ => {
            return Err(CliError::Usage(
                "give --flat, --per-unit with --unit, or --model with token prices".into(),
            ));
        }
    };
    let overrun = match (a.overrun, a.overrun_allowance) {
        (None, None) => None,
        (Some(OverrunArg::AllowUpTo), Some(allowance)) => Some(Overrun::AllowUpTo(allowance)),
        (Some(OverrunArg::AllowUpTo), None) => {
            return Err(CliError::Usage(
                "--overrun allow-up-to needs --overrun-allowance".into(),
            ));
        }
        (Some(OverrunArg::CapAtHold), None) => Some(Overrun::CapAtHold),
        (Some(OverrunArg::ChargeActual), None) => Some(Overrun::ChargeActual),
        (_, Some(_)) => {
            return Err(CliError::Usage(
                "--overrun-allowance goes only with --overrun allow-up-to".into(),
            ));
        }
    };
    let stop = a.stop.map(|stop| match stop {
        StopArg::FinishRunning => StopRule::FinishRunning,
        StopArg::StopRunning => StopRule::StopRunning,
    });
    cli::price_set(
        &a.connection,
        a.feature,
        a.wallet,
        price,
        overrun,
        stop,
        a.effective_at_ms.unwrap_or(0),
    )
    .await
}

async fn limit(command: LimitCommand) -> ExitCode {
    let (target, amount) = match command {
        LimitCommand::Set { target, amount } => (target, Some(amount)),
        LimitCommand::Remove { target } => (target, None),
    };
    let (key, value) = target.label;
    let answer = cli::limit_set(
        &target.connection,
        target.account,
        key,
        value,
        &target.per,
        amount,
    )
    .await;
    answered(target.connection.json, answer)
}

async fn usage(a: UsageArgs) -> Result<Answer, CliError> {
    let since =
        i64::try_from(a.since).map_err(|_| CliError::Usage("--since is too long".into()))?;
    let call = UsageCall {
        account: a.account,
        group_by: a.group_by,
        since_ms: creditgate::clock::Clock::now_ms(&SystemClock).saturating_sub(since),
        label: a.label,
    };
    cli::usage(&a.connection, call).await
}

async fn bench(args: creditgate::bench::BenchArgs) -> Result<(), creditgate::bench::BenchError> {
    let json = args.json;
    let report = creditgate::bench::run(args).await?;
    if json {
        println!("{report}");
    } else {
        print!("{}", creditgate::bench::table(&report));
    }
    Ok(())
}

async fn watch(args: WatchArgs) -> Result<(), CliError> {
    let filter = (args.wallets, args.features);
    cli::watch(&args.connection, args.account, filter, |answer| {
        cli::print(&answer, args.connection.json)
    })
    .await
}

/// Meters a process: its exit status is the command's.
async fn run(args: RunArgs) -> ExitCode {
    let call = cli::RunCall {
        account: args.account,
        feature: args.feature,
        wallet: args.wallet,
        hold_ms: args.hold,
        grace_ms: args.grace,
        labels: args.labels,
        command: args.command,
    };
    match cli::run(&args.connection, call).await {
        Ok(outcome) => {
            cli::eprint(&outcome.report, args.connection.json);
            ExitCode::from(outcome.status.clamp(0, 255) as u8)
        }
        Err(error) => failed(error),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => finish(serve(args).await),
        Command::Migrate(args) => finish(migrate(args).await),
        Command::Bench(args) => finish(bench(args).await),
        Command::Watch(args) => finish(watch(args).await),
        Command::Run(args) => run(args).await,
        Command::Grant(a) => answered(a.connection.json, grant(a).await),
        Command::Balance(a) => answered(
            a.connection.json,
            cli::balance(&a.connection, a.account, a.wallet).await,
        ),
        Command::Reserve(a) => answered(a.connection.json, reserve(a).await),
        Command::Commit(a) => answered(
            a.connection.json,
            cli::commit(&a.connection, a.id, a.cost).await,
        ),
        Command::Release(a) => answered(a.connection.json, cli::release(&a.connection, a.id).await),
        Command::Extend(a) => answered(
            a.connection.json,
            cli::extend(
                &a.connection,
                a.id,
                a.amount,
                a.ttl.unwrap_or(0),
                a.idempotency_key,
            )
            .await,
        ),
        Command::Charge(a) => answered(a.connection.json, charge(a).await),
        Command::Price(PriceCommand::List { connection }) => {
            answered(connection.json, cli::price_list(&connection).await)
        }
        Command::Price(PriceCommand::Set(a)) => answered(a.connection.json, price_set(*a).await),
        Command::Health(a) => answered(
            a.connection.json,
            cli::health(&a.connection, &a.service).await,
        ),
        Command::Limit(command) => limit(command).await,
        Command::Wallet(WalletCommand::Set {
            connection,
            account,
            wallet,
            flex_cap,
        }) => answered(
            connection.json,
            cli::wallet_set(&connection, account, wallet, flex_cap).await,
        ),
        Command::Events(a) => answered(
            a.connection.json,
            cli::events(&a.connection, a.account, a.limit).await,
        ),
        Command::Alerts(AlertsCommand::Set {
            connection,
            account,
            wallet,
            below,
            allowance_used,
            top_up_below,
            top_up_amount,
            top_up_to,
        }) => {
            let call = cli::AlertsCall {
                account,
                wallet,
                below,
                allowance_used,
                top_up_below,
                top_up_amount,
                top_up_to,
            };
            answered(connection.json, cli::alerts_set(&connection, call).await)
        }
        Command::Reconcile(a) => answered(
            a.connection.json,
            cli::reconcile(&a.connection, a.account, a.rebuild).await,
        ),
        Command::Usage(a) => answered(a.connection.json, usage(a).await),
        Command::Check(a) => answered(
            a.connection.json,
            cli::check(
                &a.connection,
                a.target.account,
                a.target.feature,
                a.target.wallet,
                a.cost,
                a.labels,
            )
            .await,
        ),
    }
}

//! The caller policy, end to end on the Redis store with a PostgreSQL ledger: callers known by
//! their client certificate or bearer token reach only their accounts and operations; anything
//! else is refused before the store is asked, and changes nothing.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::certs::{Client, certificates, connect};
use common::*;
use creditgate::clock::SystemClock;
use creditgate::config::{FileConfig, Flags, ServerConfig};
use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
use creditgate::server::Server;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// A server from a config file's text, on the test Redis Cluster (a namespace of its own)
/// and a PostgreSQL database of its own, on free ports.
async fn start(text: &str, dir: &std::path::Path, pg: &PgDatabase) -> Server {
    let file: FileConfig = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\n\
         admin_listen = \"127.0.0.1:0\"\n\
         metrics_listen = \"off\"\n\
         ledger = \"{}\"\n\
         redis = \"{}\"\n\
         redis_namespace = \"t{}\"\n\
         {text}",
        pg.url,
        cluster_urls(),
        &uuid::Uuid::new_v4().simple().to_string()[..12],
    ))
    .expect("the test config parses");
    let flags = Flags {
        data_dir: Some(dir.to_owned()),
        ..Flags::default()
    };
    let config = ServerConfig::resolve(flags, file).expect("the test config is valid");
    Server::start(config, Arc::new(SystemClock))
        .await
        .expect("server starts")
}

fn code<T: std::fmt::Debug>(answer: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let status = answer.expect_err("the call is refused");
    (status.code(), status.message().to_owned())
}

async fn snapshot(
    gate: &mut GateClient<Channel>,
    admin: &mut AdminClient<Channel>,
    account: &str,
) -> (proto::WalletBalance, usize) {
    (
        default_wallet(gate, account).await,
        entries(admin, account).await.len(),
    )
}

#[tokio::test]
async fn callers_by_certificate_reach_only_their_accounts_and_operations() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    certificates(
        &certs,
        &[
            ("gateway", "URI:spiffe://test.local/ns/ai/sa/gateway"),
            ("ops", "DNS:ops.example"),
            ("stranger", "DNS:stranger.example"),
        ],
    );
    let path = |name: &str| certs.join(name).display().to_string();
    let pg = PgDatabase::create().await;
    let server = start(
        &format!(
            r#"
[tls]
cert = "{}"
key = "{}"
client_ca = "{}"

[[callers]]
name = "gateway"
san = "spiffe://test.local/ns/ai/sa/gateway"
accounts = ["acme:*"]

[[callers]]
name = "ops"
san = "ops.example"
accounts = ["*"]
operations = ["gate", "admin"]
"#,
            path("server.crt"),
            path("server.key"),
            path("ca.crt")
        ),
        dir.path(),
        &pg,
    )
    .await;
    let channel = |addr, who| {
        let certs = certs.clone();
        async move { connect(addr, &certs, who).await.expect("TLS connects") }
    };
    let mut ops = GateClient::new(channel(server.gate_addr(), Client::Named("ops")).await);
    let mut ops_admin = AdminClient::new(channel(server.admin_addr(), Client::Named("ops")).await);
    let mut gateway = GateClient::new(channel(server.gate_addr(), Client::Named("gateway")).await);
    let mut gateway_admin =
        AdminClient::new(channel(server.admin_addr(), Client::Named("gateway")).await);

    grant(&mut ops_admin, "acme:1", "g-acme", "10.00").await;
    grant(&mut ops_admin, "other", "g-other", "10.00").await;

    // Its own accounts: served.
    let hold = gateway
        .reserve(reserve_amount("acme:1", "chat", "2.00"))
        .await
        .expect("the gateway reserves on its own account")
        .into_inner();
    assert_eq!(hold.decision, ALLOWED);
    gateway
        .commit(commit_amount(&hold.reservation_id, "1.00"))
        .await
        .expect("and commits");

    // Another's: refused, naming caller and account, and nothing changes.
    let ops_hold = ops
        .reserve(reserve_amount("other", "chat", "2.00"))
        .await
        .unwrap()
        .into_inner();
    let before = snapshot(&mut ops, &mut ops_admin, "other").await;
    let (refused, message) = code(
        gateway
            .reserve(reserve_amount("other", "chat", "1.00"))
            .await,
    );
    assert_eq!(refused, Code::PermissionDenied);
    assert!(
        message.contains("gateway") && message.contains("other"),
        "{message}"
    );
    let id = ops_hold.reservation_id.clone();
    let refusals = [
        code(gateway.charge(charge_amount("other", "chat", "1.00")).await),
        code(gateway.commit(commit_amount(&id, "2.00")).await),
        code(
            gateway
                .release(proto::ReleaseRequest {
                    reservation_id: id.clone(),
                })
                .await,
        ),
        code(
            gateway
                .extend(proto::ExtendRequest {
                    reservation_id: id.clone(),
                    additional_amount: "1.00".into(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            gateway
                .check(proto::CheckRequest {
                    account_id: "other".into(),
                    feature: "chat".into(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            gateway
                .get_balance(proto::GetBalanceRequest {
                    account_id: "other".into(),
                    ..Default::default()
                })
                .await,
        ),
    ];
    for (refused, message) in refusals {
        assert_eq!(refused, Code::PermissionDenied, "{message}");
    }
    assert_eq!(snapshot(&mut ops, &mut ops_admin, "other").await, before);
    // The hold the gateway could not touch is still there to release.
    ops.release(proto::ReleaseRequest {
        reservation_id: id.clone(),
    })
    .await
    .expect("the hold was left alone");

    // Admin operations: refused to a caller that is not an admin, even on its own accounts.
    let acme_before = snapshot(&mut ops, &mut ops_admin, "acme:1").await;
    let (refused, message) = code(
        gateway_admin
            .add_grant(proto::AddGrantRequest {
                account_id: "acme:1".into(),
                grant_id: "g-self".into(),
                amount: "100.00".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(refused, Code::PermissionDenied);
    assert!(message.contains("add_grant"), "{message}");
    let (refused, _) = code(
        gateway_admin
            .set_prices(proto::SetPricesRequest {
                features: vec![proto::FeaturePrice {
                    feature: "chat".into(),
                    rule: Some(proto::feature_price::Rule::PerCall(proto::PerCallPrice {
                        price: "0.00".into(),
                    })),
                    ..Default::default()
                }],
            })
            .await,
    );
    assert_eq!(refused, Code::PermissionDenied);
    assert_eq!(
        snapshot(&mut ops, &mut ops_admin, "acme:1").await,
        acme_before
    );
    assert_eq!(acme_before.0.available, "9.00");
    let prices = ops_admin
        .get_prices(proto::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(prices.features.is_empty(), "no price was set");

    // A certificate from the CA that no caller has: unauthenticated.
    let mut stranger =
        GateClient::new(channel(server.gate_addr(), Client::Named("stranger")).await);
    let (refused, message) = code(
        stranger
            .get_balance(proto::GetBalanceRequest {
                account_id: "acme:1".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(refused, Code::Unauthenticated);
    assert!(message.contains("stranger.example"), "{message}");
    // No certificate at all: refused at the handshake.
    let anonymous = match connect(server.gate_addr(), &certs, Client::Anonymous).await {
        Err(_) => true,
        Ok(channel) => GateClient::new(channel)
            .charge(charge_amount("acme:1", "chat", "1.00"))
            .await
            .is_err(),
    };
    assert!(anonymous, "a client without a certificate is refused");
    assert_eq!(
        snapshot(&mut ops, &mut ops_admin, "acme:1").await,
        acme_before
    );

    server.stop().await;
    pg.drop_database().await;
}

/// A request carrying `authorization: Bearer <token>`, if a token is given.
fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn bearer_tokens_identify_callers_and_keep_their_idempotency_keys_apart() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgDatabase::create().await;
    let server = start(
        &format!(
            r#"
[[callers]]
name = "alpha"
token_sha256 = "{}"
accounts = ["shared"]

[[callers]]
name = "beta"
token_sha256 = "{}"
accounts = ["shared"]
operations = ["reserve", "get_balance"]

[[callers]]
name = "root"
token_sha256 = "{}"
accounts = ["*"]
operations = ["admin"]
"#,
            token_sha256("alpha-token"),
            token_sha256("beta-token"),
            token_sha256("root-token"),
        ),
        dir.path(),
        &pg,
    )
    .await;
    let mut gate = GateClient::connect(format!("http://{}", server.gate_addr()))
        .await
        .unwrap();
    let mut admin = AdminClient::connect(format!("http://{}", server.admin_addr()))
        .await
        .unwrap();
    let grant = |token| {
        with_token(
            proto::AddGrantRequest {
                account_id: "shared".into(),
                grant_id: "g1".into(),
                amount: "10.00".into(),
                ..Default::default()
            },
            token,
        )
    };
    let (refused, message) = code(admin.add_grant(grant(None)).await);
    assert_eq!(refused, Code::Unauthenticated);
    assert!(message.contains("bearer token"), "{message}");
    let (refused, message) = code(admin.add_grant(grant(Some("guess"))).await);
    assert_eq!(refused, Code::Unauthenticated);
    assert!(message.contains("unknown bearer token"), "{message}");
    admin
        .add_grant(grant(Some("root-token")))
        .await
        .expect("the admin grants");
    // The admin caller may use admin operations only.
    let (refused, _) = code(
        gate.reserve(with_token(
            reserve_amount("shared", "chat", "1.00"),
            Some("root-token"),
        ))
        .await,
    );
    assert_eq!(refused, Code::PermissionDenied);

    // The same idempotency key from two callers is two requests; again from one, one.
    let keyed = |token| {
        let mut request = reserve_amount("shared", "chat", "1.00");
        request.idempotency_key = "job-1".into();
        with_token(request, Some(token))
    };
    let first = gate
        .reserve(keyed("alpha-token"))
        .await
        .unwrap()
        .into_inner();
    let other = gate
        .reserve(keyed("beta-token"))
        .await
        .unwrap()
        .into_inner();
    let again = gate
        .reserve(keyed("alpha-token"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.decision, other.decision), (ALLOWED, ALLOWED));
    assert_ne!(first.reservation_id, other.reservation_id);
    assert_eq!(first.reservation_id, again.reservation_id);
    let shared = gate
        .get_balance(with_token(
            proto::GetBalanceRequest {
                account_id: "shared".into(),
                ..Default::default()
            },
            Some("beta-token"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shared.wallets[0].held, "2.00", "two holds, not three");
    // beta may reserve but not commit, even its own hold.
    let (refused, message) = code(
        gate.commit(with_token(
            commit_amount(&other.reservation_id, "1.00"),
            Some("beta-token"),
        ))
        .await,
    );
    assert_eq!(refused, Code::PermissionDenied);
    assert!(message.contains("commit"), "{message}");

    // The command line sends its token with --token; health needs none.
    let url = format!("http://{}", server.gate_addr());
    let creditgate = move |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_creditgate"))
            .args(args)
            .args(["--server", &url])
            .env_remove("CREDITGATE_TOKEN")
            .output()
            .unwrap()
    };
    let (with, without, health) = tokio::task::spawn_blocking(move || {
        (
            creditgate(&["balance", "--account", "shared", "--token", "alpha-token"]),
            creditgate(&["balance", "--account", "shared"]),
            creditgate(&["health"]),
        )
    })
    .await
    .unwrap();
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(String::from_utf8_lossy(&with.stdout).contains("2.00"));
    assert_eq!(without.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&without.stderr).contains("Unauthenticated"));
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    assert!(String::from_utf8_lossy(&health.stdout).contains("SERVING"));

    server.stop().await;
    pg.drop_database().await;
}

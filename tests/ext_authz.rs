//! The Envoy external authorizer, asked exactly as Envoy asks: `CheckRequest`s over gRPC with
//! the request's headers (and metadata), against a real server.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::redis::RedisServer;
use common::*;
use creditgate::clock::SystemClock;
use creditgate::config::ServerConfig;
use creditgate::proto;
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tonic::Code;
use tonic::transport::Channel;

/// A server with the authorizer on, and a client of it.
async fn start_authorizer(mut config: ServerConfig) -> (TestServer, AuthorizationClient<Channel>) {
    config.ext_authz_listen = Some("127.0.0.1:0".parse().unwrap());
    let mut t = start_with(config, Arc::new(SystemClock)).await;
    let addr = t.server.ext_authz_addr().expect("the authorizer is served");
    let client = AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    // A call costs 0.01; a minute of agent time 0.05.
    t.admin
        .set_prices(proto::SetPricesRequest {
            features: vec![
                proto::FeaturePrice {
                    feature: "api.call".into(),
                    rule: Some(proto::feature_price::Rule::PerCall(proto::PerCallPrice {
                        price: "0.01".into(),
                    })),
                    ..Default::default()
                },
                proto::FeaturePrice {
                    feature: "agent.minutes".into(),
                    rule: Some(proto::feature_price::Rule::PerUnit(proto::PerUnitPrice {
                        unit: "minute".into(),
                        price: "0.05".into(),
                    })),
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap();
    (t, client)
}

/// What Envoy sends for an HTTP request with these headers.
fn check(headers: &[(&str, &str)]) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain([(":path".to_owned(), "/v1/chat".to_owned())])
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/v1/chat".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The HTTP status Envoy would answer with (200 when allowed), the headers and the body.
fn outcome(response: &CheckResponse) -> (i32, HashMap<String, String>, serde_json::Value) {
    match response.http_response.as_ref().expect("an HTTP response") {
        HttpResponse::OkResponse(ok) => {
            let headers = ok
                .response_headers_to_add
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            (200, headers, serde_json::Value::Null)
        }
        HttpResponse::DeniedResponse(denied) => {
            let headers = denied
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            let body = serde_json::from_str(&denied.body).expect("a JSON body");
            (denied.status.as_ref().unwrap().code, headers, body)
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn ask(client: &mut AuthorizationClient<Channel>, request: CheckRequest) -> CheckResponse {
    client.check(request).await.expect("an answer").into_inner()
}

#[tokio::test]
async fn requests_are_charged_until_the_account_runs_out_then_denied_with_402() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, mut envoy) = start_authorizer(common::config(dir.path())).await;
    grant(&mut t.admin, "acme", "g1", "0.02").await;
    let headers = |id: &'static str| {
        check(&[
            ("x-creditgate-account", "acme"),
            ("x-creditgate-feature", "api.call"),
            ("x-request-id", id),
        ])
    };

    let first = ask(&mut envoy, headers("r1")).await;
    assert_eq!(first.status.as_ref().unwrap().code, 0, "OK");
    let (status, headers_added, _) = outcome(&first);
    assert_eq!(status, 200);
    assert_eq!(headers_added["x-creditgate-available"], "0.01");
    assert_eq!(headers_added["x-creditgate-charged"], "0.01");
    // Envoy asking again about the same request (a retry) is the same charge.
    let again = ask(&mut envoy, headers("r1")).await;
    assert_eq!(outcome(&again).1["x-creditgate-available"], "0.01");
    assert_eq!(default_wallet(&mut t.gate, "acme").await.spent, "0.01");

    let second = ask(&mut envoy, headers("r2")).await;
    assert_eq!(outcome(&second).1["x-creditgate-available"], "0.00");
    // Out of credits: a denial Envoy returns as it is, never an authorizer error.
    let third = ask(&mut envoy, headers("r3")).await;
    assert_eq!(
        third.status.as_ref().unwrap().code,
        Code::PermissionDenied as i32
    );
    let (status, denied_headers, body) = outcome(&third);
    assert_eq!(status, 402);
    assert_eq!(denied_headers["content-type"], "application/json");
    assert_eq!(body["error"], "insufficient_credits");
    assert_eq!(body["account_id"], "acme");
    assert_eq!(body["feature"], "api.call");
    assert_eq!(default_wallet(&mut t.gate, "acme").await.spent, "0.02");
    t.server.stop().await;
}

#[tokio::test]
async fn units_come_from_a_header_and_the_account_from_jwt_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    let file: creditgate::config::FileConfig = toml::from_str(
        "[ext_authz]\naccount_metadata = \"envoy.filters.http.jwt_authn/jwt_payload/org\"\n\
         feature = \"agent.minutes\"\n",
    )
    .unwrap();
    config.ext_authz = ServerConfig::resolve(creditgate::config::Flags::default(), file)
        .unwrap()
        .ext_authz;
    let (mut t, mut envoy) = start_authorizer(config).await;
    grant(&mut t.admin, "globex", "g1", "1.00").await;

    // The JWT filter put the token's payload in the metadata; the account header is ignored.
    let mut request = check(&[
        ("x-creditgate-account", "acme"),
        ("x-creditgate-units", "3"),
    ]);
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let payload = Struct {
        fields: [("org".to_owned(), text("globex"))].into(),
    };
    let jwt = Struct {
        fields: [(
            "jwt_payload".to_owned(),
            Value {
                kind: Some(Kind::StructValue(payload)),
            },
        )]
        .into(),
    };
    request.attributes.as_mut().unwrap().metadata_context = Some(Metadata {
        filter_metadata: [("envoy.filters.http.jwt_authn".to_owned(), jwt)].into(),
        ..Default::default()
    });
    let answer = ask(&mut envoy, request).await;
    let (status, headers, _) = outcome(&answer);
    assert_eq!(status, 200);
    assert_eq!(headers["x-creditgate-charged"], "0.15", "3 minutes at 0.05");
    assert_eq!(default_wallet(&mut t.gate, "globex").await.spent, "0.15");
    t.server.stop().await;
}

#[tokio::test]
async fn a_request_that_does_not_say_who_pays_is_denied_with_400_naming_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, mut envoy) = start_authorizer(common::config(dir.path())).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    for (headers, field) in [
        (
            vec![("x-creditgate-feature", "api.call")],
            "x-creditgate-account",
        ),
        (
            vec![("x-creditgate-account", "acme")],
            "x-creditgate-feature",
        ),
        (
            vec![
                ("x-creditgate-account", "a b"),
                ("x-creditgate-feature", "api.call"),
            ],
            "x-creditgate-account",
        ),
        (
            vec![
                ("x-creditgate-account", "acme"),
                ("x-creditgate-feature", "api.call"),
                ("x-creditgate-units", "-1"),
            ],
            "x-creditgate-units",
        ),
        (
            // A per-minute price needs the units.
            vec![
                ("x-creditgate-account", "acme"),
                ("x-creditgate-feature", "agent.minutes"),
            ],
            "x-creditgate-units",
        ),
    ] {
        let answer = ask(&mut envoy, check(&headers)).await;
        assert_eq!(
            answer.status.as_ref().unwrap().code,
            Code::InvalidArgument as i32
        );
        let (status, _, body) = outcome(&answer);
        assert_eq!(status, 400, "{headers:?}");
        assert_eq!(body["field"], field, "{headers:?}: {body}");
    }
    assert_eq!(default_wallet(&mut t.gate, "acme").await.spent, "0.00");
    t.server.stop().await;
}

#[tokio::test]
async fn an_unreachable_store_is_an_error_so_envoy_failure_mode_decides() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let mut config = common::config(dir.path());
    config.redis = Some(redis.url());
    config.limits.redis_timeout_ms = 200;
    let (mut t, mut envoy) = start_authorizer(config).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    let request = check(&[
        ("x-creditgate-account", "acme"),
        ("x-creditgate-feature", "api.call"),
    ]);
    assert_eq!(outcome(&ask(&mut envoy, request.clone()).await).0, 200);

    redis.kill();
    let status = envoy.check(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    t.server.stop().await;
}

#[tokio::test]
async fn envoy_charges_only_the_accounts_its_caller_policy_allows() {
    let dir = tempfile::tempdir().unwrap();
    let file: creditgate::config::FileConfig = toml::from_str(&format!(
        r#"
ext_authz_listen = "127.0.0.1:0"
[[prices]]
feature = "api.call"
per_call = "0.01"

[[callers]]
name = "envoy"
token_sha256 = "{}"
accounts = ["acme:*"]
operations = ["ext_authz"]

[[callers]]
name = "root"
token_sha256 = "{}"
accounts = ["*"]
operations = ["gate", "admin"]
"#,
        token_sha256("envoy-token"),
        token_sha256("root-token")
    ))
    .unwrap();
    let mut config = common::config(dir.path());
    let resolved = ServerConfig::resolve(creditgate::config::Flags::default(), file).unwrap();
    config.ext_authz_listen = resolved.ext_authz_listen;
    config.prices = resolved.prices;
    config.policy = resolved.policy;
    let t = start_with(config, Arc::new(SystemClock)).await;
    let mut envoy =
        AuthorizationClient::connect(format!("http://{}", t.server.ext_authz_addr().unwrap()))
            .await
            .unwrap();
    fn signed<T>(mut request: tonic::Request<T>, token: &str) -> tonic::Request<T> {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
    let mut admin = t.admin.clone();
    for account in ["acme:1", "other"] {
        admin
            .add_grant(signed(
                tonic::Request::new(proto::AddGrantRequest {
                    account_id: account.into(),
                    grant_id: "g1".into(),
                    amount: "1.00".into(),
                    ..Default::default()
                }),
                "root-token",
            ))
            .await
            .unwrap();
    }
    let request = |account: &str, id: &str| {
        tonic::Request::new(check(&[
            ("x-creditgate-account", account),
            ("x-creditgate-feature", "api.call"),
            ("x-request-id", id),
        ]))
    };

    let allowed = envoy
        .check(signed(request("acme:1", "r1"), "envoy-token"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome(&allowed).0, 200);
    // An account outside the policy: a denial (403) Envoy returns as it is, and no charge.
    let refused = envoy
        .check(signed(request("other", "r2"), "envoy-token"))
        .await
        .unwrap()
        .into_inner();
    let (status, _, body) = outcome(&refused);
    assert_eq!(status, 403);
    assert_eq!(body["error"], "permission_denied");
    assert_eq!(body["account_id"], "other");
    // A caller the policy does not know: an error, for Envoy's failure mode to decide.
    let unknown = envoy
        .check(request("acme:1", "r3"))
        .await
        .expect_err("no token, no answer");
    assert_eq!(unknown.code(), Code::Unauthenticated);
    // A caller that may not use the authorizer: also an error.
    let root = envoy
        .check(signed(request("acme:1", "r4"), "root-token"))
        .await
        .expect_err("root may not use ext_authz");
    assert_eq!(root.code(), Code::PermissionDenied);

    let mut gate = t.gate.clone();
    for (account, spent) in [("acme:1", "0.01"), ("other", "0.00")] {
        let balance = gate
            .get_balance(signed(
                tonic::Request::new(proto::GetBalanceRequest {
                    account_id: account.into(),
                    ..Default::default()
                }),
                "root-token",
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(balance.wallets[0].spent, spent, "{account}");
    }
    t.server.stop().await;
}

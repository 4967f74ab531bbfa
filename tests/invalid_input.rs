//! Every malformed request gets INVALID_ARGUMENT naming the field, and changes nothing.

mod common;

use std::future::Future;
use std::pin::Pin;

use common::*;
use creditgate::proto::{self, charge_request, commit_request, reserve_request};
use tonic::{Code, Status};

type Call = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

fn usage(units: &str, model: &str) -> proto::Usage {
    proto::Usage {
        units: units.into(),
        model: model.into(),
        ..Default::default()
    }
}

on_both_stores!(malformed_requests_name_the_field_and_change_nothing);

/// Calls Redis has answered so far, other than `INFO` itself.
async fn redis_calls(backend: &Backend) -> Option<u64> {
    match backend {
        Backend::Redis(server) => Some(server.calls().await),
        // Other tests share the cluster: its counts are not this test's alone.
        Backend::Memory | Backend::Cluster { .. } => None,
    }
}

async fn malformed_requests_name_the_field_and_change_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    // No background work touches the store while the calls are counted.
    let mut config = backend.config(dir.path());
    config.limits.sweep_interval_ms = 3_600_000;
    config.limits.sync_interval_ms = 3_600_000;
    config.limits.reconcile_interval_ms = 3_600_000;
    let mut t = start_with(config, std::sync::Arc::new(creditgate::clock::SystemClock)).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    t.admin
        .set_prices(proto::SetPricesRequest {
            features: vec![proto::FeaturePrice {
                feature: "chat".into(),
                wallet: "default".into(),
                rule: Some(proto::feature_price::Rule::PerMillionTokens(
                    proto::PerMillionTokensPrice {
                        models: vec![proto::ModelPrice {
                            model: "m1".into(),
                            input: "1.00".into(),
                            output: "2.00".into(),
                            ..Default::default()
                        }],
                    },
                )),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    let hold = t
        .gate
        .reserve(reserve_amount("acme", "tools", "1.00"))
        .await
        .unwrap()
        .into_inner();
    let id = hold.reservation_id.clone();
    let balance_before = balance(&mut t.gate, "acme").await;
    let entries_before = entries(&mut t.admin, "acme").await;

    let reserve = |edit: &dyn Fn(&mut proto::ReserveRequest)| -> Call {
        let mut request = reserve_amount("acme", "tools", "1.00");
        edit(&mut request);
        let mut gate = t.gate.clone();
        Box::pin(async move { gate.reserve(request).await.map(drop) })
    };
    let charge = |edit: &dyn Fn(&mut proto::ChargeRequest)| -> Call {
        let mut request = charge_amount("acme", "tools", "1.00");
        edit(&mut request);
        let mut gate = t.gate.clone();
        Box::pin(async move { gate.charge(request).await.map(drop) })
    };
    let commit = |request: proto::CommitRequest| -> Call {
        let mut gate = t.gate.clone();
        Box::pin(async move { gate.commit(request).await.map(drop) })
    };
    let extend = |request: proto::ExtendRequest| -> Call {
        let mut gate = t.gate.clone();
        Box::pin(async move { gate.extend(request).await.map(drop) })
    };
    let add_grant = |edit: &dyn Fn(&mut proto::AddGrantRequest)| -> Call {
        let mut request = proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "g2".into(),
            amount: "1.00".into(),
            ..Default::default()
        };
        edit(&mut request);
        let mut admin = t.admin.clone();
        Box::pin(async move { admin.add_grant(request).await.map(drop) })
    };
    let set_prices = |price: proto::FeaturePrice| -> Call {
        let mut admin = t.admin.clone();
        Box::pin(async move {
            admin
                .set_prices(proto::SetPricesRequest {
                    features: vec![price],
                })
                .await
                .map(drop)
        })
    };
    let amount = |text: &str| Some(reserve_request::Cost::Amount(text.into()));

    let cases: Vec<(&str, Call)> = vec![
        ("account_id", reserve(&|r| r.account_id = String::new())),
        (
            "account_id",
            reserve(&|r| r.account_id = "acme corp".into()),
        ),
        ("account_id", reserve(&|r| r.account_id = "a".repeat(129))),
        ("feature", reserve(&|r| r.feature = String::new())),
        (
            "feature",
            reserve(&|r| r.feature = "chat/completions".into()),
        ),
        ("wallet", reserve(&|r| r.wallet = "my wallet".into())),
        ("amount", reserve(&|r| r.cost = None)),
        ("amount", reserve(&|r| r.cost = amount("-1"))),
        ("amount", reserve(&|r| r.cost = amount("1e3"))),
        ("amount", reserve(&|r| r.cost = amount(" 1"))),
        ("amount", reserve(&|r| r.cost = amount("NaN"))),
        ("amount", reserve(&|r| r.cost = amount("Infinity"))),
        ("amount", reserve(&|r| r.cost = amount("0.0000001"))),
        ("amount", reserve(&|r| r.cost = amount("9007199254.740992"))),
        ("amount", reserve(&|r| r.cost = amount("0"))),
        ("amount", reserve(&|r| r.cost = amount(""))),
        ("ttl_ms", reserve(&|r| r.ttl_ms = 999)),
        ("min_amount", reserve(&|r| r.min_amount = "0.50".into())),
        (
            "min_amount",
            reserve(&|r| {
                r.allow_partial = true;
                r.min_amount = "2.00".into();
            }),
        ),
        (
            "min_amount",
            reserve(&|r| {
                r.allow_partial = true;
                r.min_amount = "0".into();
            }),
        ),
        (
            "min_amount",
            reserve(&|r| {
                r.allow_partial = true;
                r.min_amount = "half".into();
            }),
        ),
        ("ttl_ms", reserve(&|r| r.ttl_ms = 86_400_001)),
        (
            "idempotency_key",
            reserve(&|r| r.idempotency_key = "with space".into()),
        ),
        (
            "idempotency_key",
            reserve(&|r| r.idempotency_key = "k".repeat(256)),
        ),
        (
            "labels[bad key]",
            reserve(&|r| {
                r.labels.insert("bad key".into(), "x".into());
            }),
        ),
        (
            "labels",
            reserve(&|r| {
                r.labels = (0..17).map(|i| (format!("k{i}"), String::new())).collect();
            }),
        ),
        (
            "usage.units",
            reserve(&|r| {
                r.cost = Some(reserve_request::Cost::Usage(usage("two", "")));
            }),
        ),
        (
            "usage",
            reserve(&|r| {
                r.cost = Some(reserve_request::Cost::Usage(usage("2", "")));
            }),
        ),
        (
            "usage.model",
            reserve(&|r| {
                r.feature = "chat".into();
                r.cost = Some(reserve_request::Cost::Usage(usage("", "m2")));
            }),
        ),
        (
            "usage.model",
            reserve(&|r| {
                r.feature = "chat".into();
                r.cost = Some(reserve_request::Cost::Usage(usage("", "")));
            }),
        ),
        (
            "wallet",
            reserve(&|r| {
                r.feature = "chat".into();
                r.wallet = "cloud".into();
            }),
        ),
        (
            "amount",
            charge(&|r| r.cost = Some(charge_request::Cost::Amount("inf".into()))),
        ),
        ("account_id", charge(&|r| r.account_id = "é".into())),
        (
            "amount",
            charge(&|r| r.cost = Some(charge_request::Cost::Amount("0".into()))),
        ),
        ("reservation_id", commit(commit_amount("", "1.00"))),
        ("reservation_id", commit(commit_amount("no-slash", "1.00"))),
        ("amount", commit(commit_amount(&id, "1.2.3"))),
        (
            "amount",
            commit(proto::CommitRequest {
                reservation_id: id.clone(),
                actual: None,
            }),
        ),
        (
            "usage.units",
            commit(proto::CommitRequest {
                reservation_id: id.clone(),
                actual: Some(commit_request::Actual::Usage(usage("-1", ""))),
            }),
        ),
        (
            "usage",
            commit(proto::CommitRequest {
                reservation_id: id.clone(),
                actual: Some(commit_request::Actual::Usage(usage("1", ""))),
            }),
        ),
        (
            "additional_amount",
            extend(proto::ExtendRequest {
                reservation_id: id.clone(),
                additional_amount: "-5".into(),
                ..Default::default()
            }),
        ),
        (
            "additional_amount",
            extend(proto::ExtendRequest {
                reservation_id: id.clone(),
                ..Default::default()
            }),
        ),
        (
            "ttl_ms",
            extend(proto::ExtendRequest {
                reservation_id: id.clone(),
                ttl_ms: 1,
                ..Default::default()
            }),
        ),
        (
            "reservation_id",
            extend(proto::ExtendRequest {
                reservation_id: "acme/".into(),
                ttl_ms: 5_000,
                ..Default::default()
            }),
        ),
        ("reservation_id", {
            let mut gate = t.gate.clone();
            Box::pin(async move {
                gate.release(proto::ReleaseRequest {
                    reservation_id: "a b/r1".into(),
                })
                .await
                .map(drop)
            })
        }),
        ("feature", {
            let mut gate = t.gate.clone();
            Box::pin(async move {
                gate.check(proto::CheckRequest {
                    account_id: "acme".into(),
                    feature: "a b".into(),
                    ..Default::default()
                })
                .await
                .map(drop)
            })
        }),
        ("account_id", {
            let mut gate = t.gate.clone();
            Box::pin(async move {
                gate.get_balance(proto::GetBalanceRequest::default())
                    .await
                    .map(drop)
            })
        }),
    ];
    let admin_cases: Vec<(&str, Call)> = vec![
        ("amount", add_grant(&|r| r.amount = String::new())),
        ("amount", add_grant(&|r| r.amount = "0".into())),
        ("amount", add_grant(&|r| r.amount = "1.0000001".into())),
        ("grant_id", add_grant(&|r| r.grant_id = String::new())),
        (
            "features[1]",
            add_grant(&|r| r.features = vec!["ok".into(), "not ok".into()]),
        ),
        ("kind", add_grant(&|r| r.kind = 99)),
        ("expires_at_ms", add_grant(&|r| r.expires_at_ms = -1)),
        ("expires_at_ms", add_grant(&|r| r.expires_at_ms = 1)),
        ("grant_id", {
            let mut admin = t.admin.clone();
            Box::pin(async move {
                admin
                    .void_grant(proto::VoidGrantRequest {
                        account_id: "acme".into(),
                        grant_id: String::new(),
                        reason: String::new(),
                    })
                    .await
                    .map(drop)
            })
        }),
        (
            "features[0].rule",
            set_prices(proto::FeaturePrice {
                feature: "tools".into(),
                ..Default::default()
            }),
        ),
        (
            "features[0].per_unit.unit",
            set_prices(proto::FeaturePrice {
                feature: "tools".into(),
                wallet: String::new(),
                rule: Some(proto::feature_price::Rule::PerUnit(proto::PerUnitPrice {
                    unit: String::new(),
                    price: "1".into(),
                })),
                ..Default::default()
            }),
        ),
        (
            "features[0].stop",
            set_prices(proto::FeaturePrice {
                feature: "tools".into(),
                rule: Some(proto::feature_price::Rule::PerCall(proto::PerCallPrice {
                    price: "0.01".into(),
                })),
                stop: 9,
                ..Default::default()
            }),
        ),
        (
            "features[0].per_call.price",
            set_prices(proto::FeaturePrice {
                feature: "tools".into(),
                wallet: String::new(),
                rule: Some(proto::feature_price::Rule::PerCall(proto::PerCallPrice {
                    price: "-0.01".into(),
                })),
                ..Default::default()
            }),
        ),
        ("status", {
            let mut admin = t.admin.clone();
            Box::pin(async move {
                admin
                    .put_account(proto::PutAccountRequest {
                        account_id: "acme".into(),
                        display_name: String::new(),
                        status: 7,
                    })
                    .await
                    .map(drop)
            })
        }),
        ("limit", {
            let mut admin = t.admin.clone();
            Box::pin(async move {
                admin
                    .list_entries(proto::ListEntriesRequest {
                        account_id: "acme".into(),
                        limit: 5_000,
                    })
                    .await
                    .map(drop)
            })
        }),
    ];

    let count = cases.len() + admin_cases.len();
    let calls_before = redis_calls(&backend).await;
    let check = |i: usize, field: &str, status: Status| {
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "case {i} ({field}): {status:?}"
        );
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "case {i}: message {:?} must name {field}",
            status.message()
        );
    };
    for (i, (field, call)) in cases.into_iter().enumerate() {
        let status = call
            .await
            .expect_err(&format!("case {i} ({field}) must fail"));
        check(i, field, status);
    }
    assert_eq!(
        redis_calls(&backend).await,
        calls_before,
        "malformed gate requests made no Redis call"
    );
    for (i, (field, call)) in admin_cases.into_iter().enumerate() {
        let status = call
            .await
            .expect_err(&format!("admin case {i} ({field}) must fail"));
        check(i, field, status);
    }
    assert!(count >= 50);

    assert_eq!(balance(&mut t.gate, "acme").await, balance_before);
    assert_eq!(entries(&mut t.admin, "acme").await, entries_before);
    let catalog = t
        .admin
        .get_prices(proto::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(catalog.features.len(), 1, "no price was set");
    // The hold is untouched too: it still commits in full.
    let commit = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "1.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit.charged, "1.00");
    t.server.stop().await;
}

/// A request above 64 KiB is refused whole, and changes nothing.
#[tokio::test]
async fn a_request_above_the_size_limit_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    let mut request = charge_amount("acme", "chat", "0.50");
    request.labels = [("note".to_owned(), "x".repeat(70 * 1024))].into();
    let status = t.gate.charge(request).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{}", status.message());
    assert_eq!(default_wallet(&mut t.gate, "acme").await.spent, "0.00");
    t.server.stop().await;
}

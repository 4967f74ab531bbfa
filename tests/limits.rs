//! Spend limits end to end over real gRPC on each store: a cap per label (a project, an API
//! key) per day, per month or in total, checked and counted in the same step as the balance,
//! with denials naming the limit, and what a limit has counted kept across a restart.

mod common;

on_both_stores!(
    a_daily_limit_caps_holds_and_charges_carrying_its_label,
    holds_count_until_they_end_and_commits_count_what_they_charged,
    a_partial_hold_takes_what_the_limit_leaves,
    extending_a_hold_respects_its_limits,
    limits_are_changed_and_removed_and_survive_a_restart,
    a_limit_set_again_never_settles_a_hold_it_did_not_count,
    an_account_with_limits_is_rebuilt_from_the_ledger,
    malformed_limits_are_refused_naming_the_field,
);

use common::*;
use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
use tonic::Code;
use tonic::transport::Channel;

const SPEND_LIMIT: i32 = proto::DenyReason::SpendLimitReached as i32;

async fn set_limit(
    admin: &mut AdminClient<Channel>,
    account: &str,
    label: (&str, &str),
    per: proto::LimitPer,
    amount: &str,
) -> proto::SpendLimits {
    admin
        .set_limit(proto::SetLimitRequest {
            account_id: account.into(),
            label_key: label.0.into(),
            label_value: label.1.into(),
            per: per as i32,
            amount: amount.into(),
            remove: false,
        })
        .await
        .unwrap()
        .into_inner()
}

fn labelled<T>(mut request: T, labels: &[(&str, &str)]) -> T
where
    T: HasLabels,
{
    for (k, v) in labels {
        request.labels().insert((*k).into(), (*v).into());
    }
    request
}

trait HasLabels {
    fn labels(&mut self) -> &mut std::collections::HashMap<String, String>;
}

impl HasLabels for proto::ReserveRequest {
    fn labels(&mut self) -> &mut std::collections::HashMap<String, String> {
        &mut self.labels
    }
}

impl HasLabels for proto::ChargeRequest {
    fn labels(&mut self) -> &mut std::collections::HashMap<String, String> {
        &mut self.labels
    }
}

async fn limits(gate: &mut GateClient<Channel>, account: &str) -> Vec<proto::SpendLimit> {
    gate.get_balance(proto::GetBalanceRequest {
        account_id: account.into(),
        wallet: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .limits
}

/// (used, held, available) of the account's only limit.
async fn counted(gate: &mut GateClient<Channel>, account: &str) -> (String, String, String) {
    let limits = limits(gate, account).await;
    assert_eq!(limits.len(), 1, "{limits:?}");
    let l = &limits[0];
    (l.used.clone(), l.held.clone(), l.available.clone())
}

fn strings(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

async fn a_daily_limit_caps_holds_and_charges_carrying_its_label(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "100.00").await;
    let set = set_limit(
        &mut t.admin,
        "acme",
        ("project", "atlas"),
        proto::LimitPer::Day,
        "5.00",
    )
    .await;
    assert_eq!(set.limits.len(), 1);
    assert_eq!(set.limits[0].id, "project=atlas/day");
    assert!(set.limits[0].resets_at_ms > 0);

    let atlas = [("project", "atlas")];
    let charged = t
        .gate
        .charge(labelled(charge_amount("acme", "chat", "3.00"), &atlas))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(charged.decision, ALLOWED);
    let denied = t
        .gate
        .charge(labelled(charge_amount("acme", "chat", "2.01"), &atlas))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((denied.decision, denied.reason), (DENIED, SPEND_LIMIT));
    assert_eq!(denied.limit, "project=atlas/day");
    assert_eq!(denied.available, "2.00", "what the limit still allows");
    assert!(
        denied.message.contains("project=atlas/day"),
        "{}",
        denied.message
    );
    assert_eq!(
        counted(&mut t.gate, "acme").await,
        strings("3.00", "0.00", "2.00"),
        "a denial changes nothing"
    );
    let check = |amount: &str| proto::CheckRequest {
        account_id: "acme".into(),
        feature: "chat".into(),
        cost: Some(proto::check_request::Cost::Amount(amount.into())),
        labels: [("project".to_owned(), "atlas".to_owned())].into(),
        ..Default::default()
    };
    let checked = t.gate.check(check("2.01")).await.unwrap().into_inner();
    assert_eq!((checked.decision, checked.reason), (DENIED, SPEND_LIMIT));
    assert_eq!(
        (checked.limit.as_str(), checked.available.as_str()),
        ("project=atlas/day", "2.00")
    );
    let checked = t.gate.check(check("2.00")).await.unwrap().into_inner();
    assert_eq!(checked.decision, ALLOWED);

    // Other projects and unlabelled calls are not limited.
    let other = t
        .gate
        .charge(labelled(
            charge_amount("acme", "chat", "10.00"),
            &[("project", "zephyr")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.decision, ALLOWED);
    let plain = t
        .gate
        .charge(charge_amount("acme", "chat", "10.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.decision, ALLOWED);
    let reserved = t
        .gate
        .reserve(labelled(reserve_amount("acme", "chat", "2.00"), &atlas))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reserved.decision, ALLOWED);
    let denied = t
        .gate
        .reserve(labelled(reserve_amount("acme", "chat", "0.01"), &atlas))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((denied.decision, denied.reason), (DENIED, SPEND_LIMIT));
    assert_eq!(denied.limit, "project=atlas/day");
    assert_eq!(default_wallet(&mut t.gate, "acme").await.available, "75.00");
    t.server.stop().await;
}

async fn holds_count_until_they_end_and_commits_count_what_they_charged(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "100.00").await;
    set_limit(
        &mut t.admin,
        "acme",
        ("key", "k1"),
        proto::LimitPer::Month,
        "10.00",
    )
    .await;
    let k1 = [("key", "k1"), ("user", "u7")];
    let hold = t
        .gate
        .reserve(labelled(reserve_amount("acme", "chat", "4.00"), &k1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hold.decision, ALLOWED);
    assert_eq!(
        counted(&mut t.gate, "acme").await,
        strings("0.00", "4.00", "6.00")
    );
    let commit = t
        .gate
        .commit(commit_amount(&hold.reservation_id, "1.50"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit.charged, "1.50");
    assert_eq!(
        counted(&mut t.gate, "acme").await,
        strings("1.50", "0.00", "8.50")
    );
    let hold = t
        .gate
        .reserve(labelled(reserve_amount("acme", "chat", "8.50"), &k1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hold.decision, ALLOWED);
    t.gate
        .release(proto::ReleaseRequest {
            reservation_id: hold.reservation_id,
        })
        .await
        .unwrap();
    assert_eq!(
        counted(&mut t.gate, "acme").await,
        strings("1.50", "0.00", "8.50"),
        "a released hold counts nothing"
    );
    t.server.stop().await;
}

async fn a_partial_hold_takes_what_the_limit_leaves(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "100.00").await;
    set_limit(
        &mut t.admin,
        "acme",
        ("project", "atlas"),
        proto::LimitPer::Total,
        "3.00",
    )
    .await;
    let mut request = labelled(
        reserve_amount("acme", "agent.minutes", "10.00"),
        &[("project", "atlas")],
    );
    request.allow_partial = true;
    request.min_amount = "1.00".into();
    let hold = t.gate.reserve(request.clone()).await.unwrap().into_inner();
    assert_eq!((hold.decision, hold.amount.as_str()), (ALLOWED, "3.00"));
    let denied = t.gate.reserve(request).await.unwrap().into_inner();
    assert_eq!((denied.decision, denied.reason), (DENIED, SPEND_LIMIT));
    assert_eq!(denied.available, "0.00");
    t.server.stop().await;
}

async fn extending_a_hold_respects_its_limits(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "100.00").await;
    set_limit(
        &mut t.admin,
        "acme",
        ("project", "atlas"),
        proto::LimitPer::Day,
        "5.00",
    )
    .await;
    let hold = t
        .gate
        .reserve(labelled(
            reserve_amount("acme", "agent.minutes", "3.00"),
            &[("project", "atlas")],
        ))
        .await
        .unwrap()
        .into_inner();
    let extend = |amount: &str| proto::ExtendRequest {
        reservation_id: hold.reservation_id.clone(),
        additional_amount: amount.into(),
        ..Default::default()
    };
    let denied = t.gate.extend(extend("2.01")).await.unwrap().into_inner();
    assert_eq!((denied.decision, denied.reason), (DENIED, SPEND_LIMIT));
    assert_eq!(denied.limit, "project=atlas/day");
    let extended = t.gate.extend(extend("2.00")).await.unwrap().into_inner();
    assert_eq!(
        (extended.decision, extended.amount.as_str()),
        (ALLOWED, "5.00")
    );
    assert_eq!(
        counted(&mut t.gate, "acme").await,
        strings("0.00", "5.00", "0.00")
    );
    t.server.stop().await;
}

async fn limits_are_changed_and_removed_and_survive_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "100.00").await;
    let atlas = [("project", "atlas")];
    set_limit(
        &mut t.admin,
        "acme",
        ("project", "atlas"),
        proto::LimitPer::Day,
        "5.00",
    )
    .await;
    t.gate
        .charge(labelled(charge_amount("acme", "chat", "4.00"), &atlas))
        .await
        .unwrap();
    let open = t
        .gate
        .reserve(labelled(reserve_amount("acme", "chat", "0.50"), &atlas))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(open.decision, ALLOWED);
    // Raising the limit keeps what it counted.
    let raised = set_limit(
        &mut t.admin,
        "acme",
        ("project", "atlas"),
        proto::LimitPer::Day,
        "6.00",
    )
    .await;
    assert_eq!(
        (
            raised.limits[0].used.as_str(),
            raised.limits[0].held.as_str()
        ),
        ("4.00", "0.50")
    );
    let before = limits(&mut t.gate, "acme").await;

    t.server.stop().await;
    let mut t = start_on(&backend, dir.path()).await;
    assert_eq!(
        limits(&mut t.gate, "acme").await,
        before,
        "rebuilt from the ledger"
    );
    let commit = t
        .gate
        .commit(commit_amount(&open.reservation_id, "0.50"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit.charged, "0.50");
    assert_eq!(
        counted(&mut t.gate, "acme").await,
        strings("4.50", "0.00", "1.50")
    );

    let removed = t
        .admin
        .set_limit(proto::SetLimitRequest {
            account_id: "acme".into(),
            label_key: "project".into(),
            label_value: "atlas".into(),
            per: proto::LimitPer::Day as i32,
            remove: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.limits.is_empty());
    let free = t
        .gate
        .charge(labelled(charge_amount("acme", "chat", "20.00"), &atlas))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(free.decision, ALLOWED, "no limit any more");
    let again = t
        .admin
        .set_limit(proto::SetLimitRequest {
            account_id: "acme".into(),
            label_key: "project".into(),
            label_value: "atlas".into(),
            per: proto::LimitPer::Day as i32,
            remove: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    t.server.stop().await;
    let mut t = start_on(&backend, dir.path()).await;
    assert!(limits(&mut t.gate, "acme").await.is_empty());
    t.server.stop().await;
}

async fn malformed_limits_are_refused_naming_the_field(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    let valid = proto::SetLimitRequest {
        account_id: "acme".into(),
        label_key: "project".into(),
        label_value: "atlas".into(),
        per: proto::LimitPer::Day as i32,
        amount: "5.00".into(),
        remove: false,
    };
    let cases: Vec<(&str, proto::SetLimitRequest)> = vec![
        (
            "account_id",
            proto::SetLimitRequest {
                account_id: "a b".into(),
                ..valid.clone()
            },
        ),
        (
            "label_key",
            proto::SetLimitRequest {
                label_key: String::new(),
                ..valid.clone()
            },
        ),
        (
            "label_key",
            proto::SetLimitRequest {
                label_key: "pro ject".into(),
                ..valid.clone()
            },
        ),
        (
            "label_value",
            proto::SetLimitRequest {
                label_value: "x".repeat(257),
                ..valid.clone()
            },
        ),
        (
            "per",
            proto::SetLimitRequest {
                per: 0,
                ..valid.clone()
            },
        ),
        (
            "per",
            proto::SetLimitRequest {
                per: 9,
                ..valid.clone()
            },
        ),
        (
            "amount",
            proto::SetLimitRequest {
                amount: "-1".into(),
                ..valid.clone()
            },
        ),
        (
            "amount",
            proto::SetLimitRequest {
                amount: String::new(),
                ..valid.clone()
            },
        ),
        (
            "amount",
            proto::SetLimitRequest {
                remove: true,
                ..valid.clone()
            },
        ),
    ];
    for (field, request) in cases {
        let status = t.admin.set_limit(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    assert!(limits(&mut t.gate, "acme").await.is_empty(), "nothing set");
    t.server.stop().await;
}

async fn a_limit_set_again_never_settles_a_hold_it_did_not_count(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "100.00").await;
    let atlas = [("project", "atlas")];
    let limit = |remove: bool| proto::SetLimitRequest {
        account_id: "acme".into(),
        label_key: "project".into(),
        label_value: "atlas".into(),
        per: proto::LimitPer::Day as i32,
        amount: if remove {
            String::new()
        } else {
            "10.00".into()
        },
        remove,
    };
    t.admin.set_limit(limit(false)).await.unwrap();
    let hold = t
        .gate
        .reserve(labelled(reserve_amount("acme", "chat", "5.00"), &atlas))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hold.decision, ALLOWED);
    t.admin.set_limit(limit(true)).await.unwrap();
    // Set again a little later: it starts with nothing held, and the open hold is not its.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    t.admin.set_limit(limit(false)).await.unwrap();
    assert_eq!(
        counted(&mut t.gate, "acme").await,
        strings("0.00", "0.00", "10.00")
    );
    let extended = t
        .gate
        .extend(proto::ExtendRequest {
            reservation_id: hold.reservation_id.clone(),
            additional_amount: "1.00".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(extended.decision, ALLOWED);
    assert_eq!(
        counted(&mut t.gate, "acme").await,
        strings("0.00", "0.00", "10.00"),
        "extending it does not count against the new limit either"
    );
    t.gate
        .commit(commit_amount(&hold.reservation_id, "6.00"))
        .await
        .unwrap();
    assert_eq!(
        counted(&mut t.gate, "acme").await,
        strings("6.00", "0.00", "4.00"),
        "what it charged counts; nothing held goes below zero"
    );
    t.server.stop().await;
}

async fn an_account_with_limits_is_rebuilt_from_the_ledger(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_on(&backend, dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "100.00").await;
    set_limit(
        &mut t.admin,
        "acme",
        ("project", "atlas/v2"),
        proto::LimitPer::Month,
        "50.00",
    )
    .await;
    let labels = [("project", "atlas/v2")];
    t.gate
        .charge(labelled(charge_amount("acme", "chat", "7.00"), &labels))
        .await
        .unwrap();
    let open = t
        .gate
        .reserve(labelled(reserve_amount("acme", "chat", "3.00"), &labels))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(open.decision, ALLOWED);
    let before = counted(&mut t.gate, "acme").await;
    assert_eq!(before, strings("7.00", "3.00", "40.00"));
    // The hold may still be on its way to the ledger: the reconciler answers BUSY until then.
    let mut report = None;
    for _ in 0..50 {
        let answer = t
            .admin
            .reconcile(proto::ReconcileRequest {
                account_id: "acme".into(),
                rebuild: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if answer.accounts[0].outcome != proto::ReconcileOutcome::Busy as i32 {
            report = Some(answer);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let report = report.expect("the reconciler compared the account");
    let account = &report.accounts[0];
    assert_eq!(
        (account.outcome, account.rebuilt),
        (proto::ReconcileOutcome::Compared as i32, true),
        "{report:?}"
    );
    assert_eq!(counted(&mut t.gate, "acme").await, before);
    t.server.stop().await;
}

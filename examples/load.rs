// Temporary load probe (not committed): reserve+commit or charge against a running server.
use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scenario = args.get(1).cloned().unwrap_or("reserve-commit".into());
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut admin = AdminClient::connect("http://127.0.0.1:50052")
        .await
        .unwrap();
    admin
        .add_grant(proto::AddGrantRequest {
            account_id: "load".into(),
            grant_id: format!("g{}", std::process::id()),
            amount: "9000000000".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let gate = GateClient::connect("http://127.0.0.1:50051").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let mut g = gate.clone();
        let scenario = scenario.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match scenario.as_str() {
                    "charge" => {
                        g.charge(proto::ChargeRequest {
                            account_id: "load".into(),
                            feature: "f".into(),
                            cost: Some(proto::charge_request::Cost::Amount("0.000001".into())),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    }
                    "reserve" => {
                        g.reserve(proto::ReserveRequest {
                            account_id: "load".into(),
                            feature: "f".into(),
                            cost: Some(proto::reserve_request::Cost::Amount("0.000001".into())),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    }
                    _ => {
                        let r = g
                            .reserve(proto::ReserveRequest {
                                account_id: "load".into(),
                                feature: "f".into(),
                                cost: Some(proto::reserve_request::Cost::Amount("0.000002".into())),
                                ..Default::default()
                            })
                            .await
                            .unwrap()
                            .into_inner();
                        g.commit(proto::CommitRequest {
                            reservation_id: r.reservation_id,
                            actual: Some(proto::commit_request::Actual::Amount("0.000001".into())),
                        })
                        .await
                        .unwrap();
                    }
                }
                lat.push(t0.elapsed());
                n += 1;
            }
            (n, lat)
        }));
    }
    let (mut total, mut all) = (0, vec![]);
    for t in tasks {
        let (n, l) = t.await.unwrap();
        total += n;
        all.extend(l);
    }
    all.sort();
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    println!(
        "{scenario} c={concurrency}: {:.0} ops/s p50={:?} p99={:?} max={:?}",
        total as f64 / secs as f64,
        p(0.5),
        p(0.99),
        all[all.len() - 1]
    );
}

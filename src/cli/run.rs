//! `creditgate run`: a command metered by the minute.
//!
//! The runner holds `--hold` worth of minutes before the command starts, and extends the hold
//! by another such window whenever half of the last one is left, so the command is always paid
//! for ahead. It stops the command (SIGTERM to its process group, SIGKILL after `--grace`)
//! when the time paid for runs out and the hold cannot be extended, or at once when the wallet
//! runs out under a feature whose stop rule is `stop_running` (its `DEPLETED` event, confirmed
//! by an Extend the gate refuses), or when the hold expired. Then, or when the command exits
//! by itself, it commits the minutes the command ran.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::json;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, sleep_until};

use super::{Answer, CliError, Connection, EXIT_DENIED, gate, reason_name};
use crate::proto::{self, gate_client::GateClient};

/// Micro-minutes in a millisecond, as a fraction: 1 ms = 50/3 micro-minutes.
const MICRO_MINUTES_PER_MS: (u64, u64) = (50, 3);
/// How long a failed Extend waits before it is tried again (with the same idempotency key).
const EXTEND_RETRY: Duration = Duration::from_secs(1);
/// How often a failed commit is tried (with the same request: a repeated commit is the same).
const COMMIT_ATTEMPTS: usize = 5;

/// What `creditgate run` was asked to do.
pub struct RunCall {
    pub account: String,
    pub feature: String,
    pub wallet: Option<String>,
    /// Minutes paid for ahead, in milliseconds.
    pub hold_ms: u64,
    /// Time between SIGTERM and SIGKILL.
    pub grace_ms: u64,
    pub labels: Vec<(String, String)>,
    pub command: Vec<String>,
}

/// How a metered run ended: the report to print and the runner's exit status.
pub struct RunOutcome {
    pub report: Answer,
    pub status: i32,
}

/// Why the command stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// It exited by itself (or on a signal the runner passed on).
    Exited,
    /// The time paid for ran out and no more could be held.
    OutOfCredits,
    /// The wallet ran out and the feature's work stops at once.
    Depleted,
    /// The hold reached its expiry (the gate could not be reached to extend it).
    HoldExpired,
}

impl Stop {
    fn name(self) -> Option<&'static str> {
        match self {
            Stop::Exited => None,
            Stop::OutOfCredits => Some("out_of_credits"),
            Stop::Depleted => Some("depleted"),
            Stop::HoldExpired => Some("hold_expired"),
        }
    }
}

/// `ms` as minutes with six decimals, rounded up for a hold or to the nearest for usage.
fn minutes(ms: u64, round_up: bool) -> String {
    let (num, den) = MICRO_MINUTES_PER_MS;
    let scaled = ms * num;
    let micro = if round_up {
        scaled.div_ceil(den)
    } else {
        (scaled + den / 2) / den
    };
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// The exit status a shell would report for the command.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(super::EXIT_FAILED)
}

/// Sends `signal` to the command's process group (it leads its own).
fn signal_group(child: &Child, signal: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: killpg only sends a signal; a group that has already gone is an error we
        // can ignore.
        unsafe {
            libc::killpg(pid as libc::pid_t, signal);
        }
    }
}

/// Runs the command as a metered agent.
pub async fn run(connection: &Connection, call: RunCall) -> Result<RunOutcome, CliError> {
    if call.command.is_empty() {
        return Err(CliError::Usage("give the command to run after --".into()));
    }
    if call.hold_ms < 1_000 {
        return Err(CliError::Usage("--hold must be at least 1s".into()));
    }
    let mut client = gate(connection).await?;
    // Watch first, so that a wallet running out while the hold is taken is not missed.
    let mut events = client
        .watch_balance(proto::WatchBalanceRequest {
            account_id: call.account.clone(),
            wallets: call.wallet.iter().cloned().collect(),
            features: vec![call.feature.clone()],
        })
        .await?
        .into_inner();
    let ttl_ms = call.hold_ms * 2;
    let held = client
        .reserve(proto::ReserveRequest {
            account_id: call.account.clone(),
            feature: call.feature.clone(),
            wallet: call.wallet.clone().unwrap_or_default(),
            cost: Some(proto::reserve_request::Cost::Usage(proto::Usage {
                units: minutes(call.hold_ms, true),
                ..Default::default()
            })),
            ttl_ms,
            labels: call.labels.iter().cloned().collect::<HashMap<_, _>>(),
            ..Default::default()
        })
        .await?
        .into_inner();
    if held.decision() != proto::Decision::Allowed {
        return Ok(RunOutcome {
            report: Answer {
                denied: true,
                json: json!({
                    "decision": "DENIED",
                    "reason": reason_name(held.reason),
                    "available": held.available,
                    "message": held.message,
                }),
            },
            status: EXIT_DENIED,
        });
    }

    let mut child = match Command::new(&call.command[0])
        .args(&call.command[1..])
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            let _ = client
                .release(proto::ReleaseRequest {
                    reservation_id: held.reservation_id.clone(),
                })
                .await;
            return Err(CliError::Usage(format!(
                "cannot run {:?}: {error}",
                call.command[0]
            )));
        }
    };
    let started = Instant::now();
    let meter = Meter {
        client: client.clone(),
        reservation: held.reservation_id.clone(),
        wallet: held.wallet.clone(),
        window: held.amount.clone(),
        hold: Duration::from_millis(call.hold_ms),
        ttl_ms,
    };
    let (stop, status) = meter.watch_over(&mut child, started, &mut events).await?;
    let status = match (stop, status) {
        (Stop::Exited, Some(status)) => status,
        _ => {
            signal_group(&child, libc::SIGTERM);
            let grace = Duration::from_millis(call.grace_ms);
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status?,
                Err(_) => {
                    signal_group(&child, libc::SIGKILL);
                    child.wait().await?
                }
            }
        }
    };
    let ran_ms = started.elapsed().as_millis() as u64;
    let committed = commit(&mut client, &held.reservation_id, ran_ms).await?;
    let code = match stop {
        Stop::Exited => exit_code(status),
        _ => EXIT_DENIED,
    };
    Ok(RunOutcome {
        report: Answer {
            denied: stop != Stop::Exited,
            json: json!({
                "reservation_id": held.reservation_id,
                "minutes": minutes(ran_ms, false),
                "charged": committed.charged,
                "overrun": committed.overrun,
                "available": committed.available,
                "stopped": stop.name(),
                "exit_status": exit_code(status),
            }),
        },
        status: code,
    })
}

/// Keeps a running command's hold paid ahead, and says when the command must stop.
struct Meter {
    client: GateClient<tonic::transport::Channel>,
    reservation: String,
    wallet: String,
    /// The amount one window of minutes costs, as the first hold was priced.
    window: String,
    hold: Duration,
    ttl_ms: u64,
}

impl Meter {
    /// Waits for the command to exit or for a reason to stop it; extends the hold meanwhile.
    async fn watch_over(
        mut self,
        child: &mut Child,
        started: Instant,
        events: &mut tonic::Streaming<proto::BalanceEvent>,
    ) -> Result<(Stop, Option<ExitStatus>), CliError> {
        let (hold, window) = (self.hold, self.window.clone());
        let mut windows: u32 = 1;
        // Paid for until `started + paid`; another window is added when half of one is left.
        let paid_until = |windows: u32| started + hold * windows;
        let mut next_extend = paid_until(windows) - hold / 2;
        let mut extending = true;
        let mut watching = true;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                status = child.wait() => {
                    return Ok((Stop::Exited, Some(status?)));
                }
                // Passed on: the command decides how to stop, and its minutes are committed.
                _ = interrupt.recv() => signal_group(child, libc::SIGINT),
                _ = terminate.recv() => signal_group(child, libc::SIGTERM),
                _ = sleep_until(next_extend), if extending => {
                    let key = format!("run/{}/extend/{windows}", self.reservation);
                    match self.extend(&window, key).await {
                        Ok(true) => {
                            windows += 1;
                            next_extend = paid_until(windows) - hold / 2;
                        }
                        Ok(false) => extending = false,
                        Err(_) if Instant::now() + EXTEND_RETRY < paid_until(windows) => {
                            next_extend = Instant::now() + EXTEND_RETRY;
                        }
                        Err(_) => extending = false,
                    }
                }
                _ = sleep_until(paid_until(windows)), if !extending => {
                    return Ok((Stop::OutOfCredits, None));
                }
                event = events.message(), if watching => match event {
                    Ok(Some(event)) => {
                        if let Some(stop) = self.stop_for(&event).await {
                            return Ok((stop, None));
                        }
                    }
                    // Without events the hold's extensions still stop the command in time.
                    Ok(None) | Err(_) => watching = false,
                },
            }
        }
    }

    /// Whether an event means the command must stop now.
    async fn stop_for(&mut self, event: &proto::BalanceEvent) -> Option<Stop> {
        match event.kind() {
            proto::BalanceEventKind::HoldExpired if event.reservation_id == self.reservation => {
                Some(Stop::HoldExpired)
            }
            proto::BalanceEventKind::Depleted if event.wallet == self.wallet => {
                // The feature's stop rule decides: under stop_running the gate refuses even an
                // Extend that adds only time.
                let key = format!("run/{}/depleted/{}", self.reservation, event.at_ms);
                match self.extend("", key).await {
                    Ok(false) => Some(Stop::Depleted),
                    Ok(true) | Err(_) => None,
                }
            }
            _ => None,
        }
    }

    /// Extends the hold by `amount` (and its expiry); whether the gate allowed it.
    async fn extend(&mut self, amount: &str, key: String) -> Result<bool, tonic::Status> {
        let extended = self
            .client
            .extend(proto::ExtendRequest {
                reservation_id: self.reservation.clone(),
                additional_amount: amount.to_owned(),
                ttl_ms: self.ttl_ms,
                idempotency_key: key,
            })
            .await?
            .into_inner();
        Ok(extended.decision() == proto::Decision::Allowed)
    }
}

/// Commits the minutes the command ran, trying again if the gate cannot be reached.
async fn commit(
    client: &mut GateClient<tonic::transport::Channel>,
    reservation: &str,
    ran_ms: u64,
) -> Result<proto::CommitResponse, CliError> {
    let request = proto::CommitRequest {
        reservation_id: reservation.to_owned(),
        actual: Some(proto::commit_request::Actual::Usage(proto::Usage {
            units: minutes(ran_ms, false),
            ..Default::default()
        })),
    };
    let mut attempt = 1;
    loop {
        match client.commit(request.clone()).await {
            Ok(committed) => return Ok(committed.into_inner()),
            Err(status)
                if attempt < COMMIT_ATTEMPTS && status.code() == tonic::Code::Unavailable =>
            {
                attempt += 1;
                tokio::time::sleep(EXTEND_RETRY).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_have_six_decimals() {
        assert_eq!(minutes(60_000, true), "1.000000");
        assert_eq!(minutes(300_000, false), "5.000000");
        // 1 s is 0.0166… minutes.
        assert_eq!(minutes(1_000, true), "0.016667");
        assert_eq!(minutes(1_000, false), "0.016667");
        assert_eq!(minutes(2, true), "0.000034");
        assert_eq!(minutes(2, false), "0.000033");
        assert_eq!(minutes(0, false), "0.000000");
    }
}

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
/// Longest wait for an Extend's answer.
const EXTEND_TIMEOUT: Duration = Duration::from_secs(5);
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

/// The command running, and how to signal it.
struct Running {
    child: Child,
    /// Kept: the child forgets it once it has been waited for.
    pid: Option<u32>,
    /// Whether it leads a process group of its own, so that signals reach what it started.
    /// Not when the runner reads from a terminal: the command must stay in the terminal's
    /// foreground group to read it.
    own_group: bool,
}

impl Running {
    /// Asks the command to stop, kills it if it has not within `grace`, and with it whatever
    /// it left behind in its own process group.
    async fn stop(&mut self, grace: Duration) -> std::io::Result<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                self.signal(libc::SIGKILL);
                self.child.wait().await?
            }
        };
        if self.own_group {
            // What it started and left behind stops too (its group outlives it, so the id
            // names no other process).
            self.signal(libc::SIGKILL);
        }
        Ok(status)
    }

    fn spawn(command: &[String]) -> std::io::Result<Running> {
        // SAFETY: isatty only inspects a descriptor.
        let own_group = unsafe { libc::isatty(libc::STDIN_FILENO) } == 0;
        let mut spawned = Command::new(&command[0]);
        spawned.args(&command[1..]);
        if own_group {
            spawned.process_group(0);
        }
        let child = spawned.spawn()?;
        Ok(Running {
            pid: child.id(),
            child,
            own_group,
        })
    }

    fn signal(&self, signal: libc::c_int) {
        let Some(pid) = self.pid else {
            return;
        };
        // SAFETY: kill and killpg only send a signal; one to a process that has gone is an
        // error we can ignore.
        unsafe {
            if self.own_group {
                libc::killpg(pid as libc::pid_t, signal);
            } else {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }
}

/// Whether a decimal string is zero ("0.00").
fn is_zero(amount: &str) -> bool {
    amount.bytes().all(|b| b == b'0' || b == b'.')
}

impl RunOutcome {
    /// The command was not started: its first hold was denied.
    fn denied(held: &proto::ReserveResponse) -> RunOutcome {
        RunOutcome {
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
    // The hold outlives the time it pays for by half a window and the grace period, so that
    // it is still there to commit after the command has been stopped.
    let ttl_ms = call.hold_ms * 2 + call.grace_ms;
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
        return Ok(RunOutcome::denied(&held));
    }

    let mut running = match Running::spawn(&call.command) {
        Ok(running) => running,
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
        emptied_it: is_zero(&held.available),
    };
    let (stop, status) = meter.watch_over(&mut running, started, &mut events).await?;
    let status = match (stop, status) {
        (Stop::Exited, Some(status)) => status,
        _ => running.stop(Duration::from_millis(call.grace_ms)).await?,
    };
    let ran_ms = started.elapsed().as_millis() as u64;
    let labels = call.labels.iter().cloned().collect::<HashMap<_, _>>();
    let committed = settle(&mut client, &held, &call, labels, ran_ms).await?;
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
    client: GateClient<super::Client>,
    reservation: String,
    wallet: String,
    /// The amount one window of minutes costs, as the first hold was priced.
    window: String,
    hold: Duration,
    ttl_ms: u64,
    /// Whether this run's own hold took the wallet's last credit: the `DEPLETED` that follows
    /// is its own doing, not a reason to stop before the time it paid for.
    emptied_it: bool,
}

/// What an Extend answered.
enum Extended {
    Allowed,
    Denied,
    /// No answer in time.
    Failed,
}

impl Meter {
    /// Waits for the command to exit or for a reason to stop it; extends the hold meanwhile.
    async fn watch_over(
        mut self,
        running: &mut Running,
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
                status = running.child.wait() => {
                    return Ok((Stop::Exited, Some(status?)));
                }
                // Passed on: the command decides how to stop, and its minutes are committed.
                _ = interrupt.recv() => running.signal(libc::SIGINT),
                _ = terminate.recv() => running.signal(libc::SIGTERM),
                _ = sleep_until(next_extend), if extending => {
                    let key = format!("run/{}/extend/{windows}", self.reservation);
                    // An answer that comes after the paid time is no use.
                    let deadline = paid_until(windows).min(Instant::now() + EXTEND_TIMEOUT);
                    match self.extend(&window, key, deadline).await {
                        Extended::Allowed => {
                            windows += 1;
                            next_extend = paid_until(windows) - hold / 2;
                        }
                        Extended::Denied => extending = false,
                        Extended::Failed if Instant::now() + EXTEND_RETRY < paid_until(windows) => {
                            next_extend = Instant::now() + EXTEND_RETRY;
                        }
                        Extended::Failed => extending = false,
                    }
                }
                _ = sleep_until(paid_until(windows)), if !extending => {
                    return Ok((Stop::OutOfCredits, None));
                }
                event = events.message(), if watching => match event {
                    Ok(Some(event)) => {
                        if event.kind() == proto::BalanceEventKind::Replenished
                            && event.wallet == self.wallet
                            && !extending
                        {
                            // A top-up in time: try to extend again.
                            extending = true;
                            next_extend = Instant::now();
                        }
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
            proto::BalanceEventKind::Replenished if event.wallet == self.wallet => {
                self.emptied_it = false;
                None
            }
            proto::BalanceEventKind::Depleted if event.wallet == self.wallet => {
                if std::mem::take(&mut self.emptied_it) {
                    return None;
                }
                // The feature's stop rule decides: under stop_running the gate refuses even an
                // Extend that adds only time.
                let key = format!("run/{}/depleted/{}", self.reservation, event.at_ms);
                let deadline = Instant::now() + EXTEND_TIMEOUT;
                match self.extend("", key, deadline).await {
                    Extended::Denied => Some(Stop::Depleted),
                    Extended::Allowed | Extended::Failed => None,
                }
            }
            _ => None,
        }
    }

    /// Extends the hold by `amount` (and its expiry), waiting for the answer until `deadline`.
    async fn extend(&mut self, amount: &str, key: String, deadline: Instant) -> Extended {
        let request = proto::ExtendRequest {
            reservation_id: self.reservation.clone(),
            additional_amount: amount.to_owned(),
            ttl_ms: self.ttl_ms,
            idempotency_key: key,
        };
        match tokio::time::timeout_at(deadline, self.client.extend(request)).await {
            Ok(Ok(extended)) => {
                let extended = extended.into_inner();
                if extended.decision() != proto::Decision::Allowed {
                    return Extended::Denied;
                }
                if !amount.is_empty() && is_zero(&extended.available) {
                    self.emptied_it = true;
                }
                Extended::Allowed
            }
            Ok(Err(_)) | Err(_) => Extended::Failed,
        }
    }
}

/// What the run was charged.
struct Settled {
    charged: String,
    overrun: String,
    available: String,
}

/// Commits the minutes the command ran, trying again if the gate cannot be reached. If the
/// hold has ended meanwhile (it expired while the gate was out of reach), the minutes are
/// charged directly instead, so that they are not lost.
async fn settle(
    client: &mut GateClient<super::Client>,
    held: &proto::ReserveResponse,
    call: &RunCall,
    labels: HashMap<String, String>,
    ran_ms: u64,
) -> Result<Settled, CliError> {
    let usage = proto::Usage {
        units: minutes(ran_ms, false),
        ..Default::default()
    };
    let request = proto::CommitRequest {
        reservation_id: held.reservation_id.clone(),
        actual: Some(proto::commit_request::Actual::Usage(usage.clone())),
    };
    let mut attempt = 1;
    loop {
        match client.commit(request.clone()).await {
            Ok(committed) => {
                let committed = committed.into_inner();
                return Ok(Settled {
                    charged: committed.charged,
                    overrun: committed.overrun,
                    available: committed.available,
                });
            }
            Err(status)
                if attempt < COMMIT_ATTEMPTS && status.code() == tonic::Code::Unavailable =>
            {
                attempt += 1;
                tokio::time::sleep(EXTEND_RETRY).await;
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => break,
            Err(status) => return Err(status.into()),
        }
    }
    let charged = client
        .charge(proto::ChargeRequest {
            account_id: call.account.clone(),
            feature: call.feature.clone(),
            wallet: held.wallet.clone(),
            cost: Some(proto::charge_request::Cost::Usage(usage)),
            idempotency_key: format!("run/{}/charge", held.reservation_id),
            labels,
        })
        .await?
        .into_inner();
    if charged.decision() != proto::Decision::Allowed {
        eprintln!(
            "creditgate: the hold had ended and the {} minutes could not be charged",
            minutes(ran_ms, false)
        );
    }
    Ok(Settled {
        charged: if charged.charged.is_empty() {
            "0".into()
        } else {
            charged.charged
        },
        overrun: String::new(),
        available: charged.available,
    })
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

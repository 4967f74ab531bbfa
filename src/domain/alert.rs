//! Alerts and auto top-up: what a wallet says when it runs low, once per crossing.
//!
//! A wallet may carry thresholds: a spendable amount (`LOW_BALANCE` when the balance falls
//! below it) or a share of its included allowances used (`ALERT` at, say, 80%), and an auto
//! top-up policy (a top-up request when the balance falls below a threshold). All are judged
//! on the spendable balance, what is left once open holds are set aside, in the same atomic
//! step as the change that crossed them.
//!
//! Each threshold fires once, then stays quiet until it is re-armed: by credit coming in (a
//! grant, a top-up, a plan reset) that lifts the wallet back over it. A top-up request stays
//! open until the grant that answers it names it; no second request is made meanwhile.

use serde::{Deserialize, Serialize};

/// Most thresholds on one wallet.
pub const ALERTS_PER_WALLET_MAX: usize = 16;

/// One threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRule {
    /// `LOW_BALANCE` when the spendable balance falls below this.
    Below { amount_minor: i64 },
    /// `ALERT` when this percentage (1–100) of the wallet's included allowances is used, held
    /// or spent.
    AllowanceUsed { percent: u32 },
}

/// How much a top-up request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopUpSize {
    /// Always this much.
    Amount { amount_minor: i64 },
    /// Enough to bring the spendable balance back to this.
    Target { target_minor: i64 },
}

/// A request for a top-up when the spendable balance falls below `below_minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUpPolicy {
    pub below_minor: i64,
    pub size: TopUpSize,
}

/// A wallet's thresholds and auto top-up policy, as an operator set them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletAlerts {
    pub rules: Vec<AlertRule>,
    pub top_up: Option<TopUpPolicy>,
}

impl WalletAlerts {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.top_up.is_none()
    }
}

/// A wallet as its alerts judge it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Level {
    /// Spendable: every active grant's remaining less what is held, plus flex room, less debt.
    pub available_minor: i64,
    /// What the wallet's active included grants gave for their current period.
    pub allowance_minor: i64,
    /// What of that is still spendable.
    pub allowance_left_minor: i64,
}

impl Level {
    /// The allowance used, held or spent.
    pub fn allowance_used_minor(&self) -> i64 {
        (self.allowance_minor - self.allowance_left_minor).max(0)
    }
}

impl AlertRule {
    /// Whether the wallet is past the threshold.
    pub fn is_met(&self, level: &Level) -> bool {
        match *self {
            AlertRule::Below { amount_minor } => level.available_minor < amount_minor,
            AlertRule::AllowanceUsed { percent } => {
                level.allowance_minor > 0
                    && i128::from(level.allowance_used_minor()) * 100
                        >= i128::from(percent) * i128::from(level.allowance_minor)
            }
        }
    }
}

/// What a wallet's alerts remember between operations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    /// Per rule, in order: whether it may fire.
    pub armed: Vec<bool>,
    /// The top-up request not answered yet.
    pub open_top_up: Option<String>,
    /// Top-up requests made so far; numbers the next one.
    pub top_ups: u64,
}

/// What crossing a threshold produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fired {
    /// The rule at this position of [`WalletAlerts::rules`].
    Rule(AlertRule),
    /// A new top-up request.
    TopUp {
        request_id: String,
        amount_minor: i64,
    },
}

/// The id of a wallet's `n`th top-up request: `topup/<account>/<wallet>/<n>`.
pub fn top_up_request_id(account: &str, wallet: &str, n: u64) -> String {
    format!("topup/{account}/{wallet}/{n}")
}

impl AlertState {
    /// The state of alerts just set on a wallet at `level`: a threshold already passed does
    /// not fire until it is re-armed. An open top-up request stays open.
    pub fn armed_at(alerts: &WalletAlerts, level: &Level, previous: Option<&AlertState>) -> Self {
        let previous = previous.cloned().unwrap_or_default();
        AlertState {
            armed: alerts.rules.iter().map(|r| !r.is_met(level)).collect(),
            open_top_up: previous.open_top_up,
            top_ups: previous.top_ups,
        }
    }

    /// Judges the wallet after an operation. `credit_came_in` says whether the operation added
    /// credit (a grant or a plan reset), which is what re-arms a threshold the wallet is back
    /// over.
    pub fn judge(
        &mut self,
        alerts: &WalletAlerts,
        level: &Level,
        credit_came_in: bool,
        (account, wallet): (&str, &str),
    ) -> Vec<Fired> {
        let mut fired = Vec::new();
        self.armed.resize(alerts.rules.len(), true);
        for (rule, armed) in alerts.rules.iter().zip(&mut self.armed) {
            let met = rule.is_met(level);
            if met && *armed {
                *armed = false;
                fired.push(Fired::Rule(*rule));
            } else if !met && !*armed && credit_came_in {
                *armed = true;
            }
        }
        if let Some(policy) = alerts.top_up
            && self.open_top_up.is_none()
            && level.available_minor < policy.below_minor
        {
            let amount_minor = match policy.size {
                TopUpSize::Amount { amount_minor } => amount_minor,
                TopUpSize::Target { target_minor } => target_minor - level.available_minor,
            };
            self.top_ups += 1;
            let request_id = top_up_request_id(account, wallet, self.top_ups);
            self.open_top_up = Some(request_id.clone());
            fired.push(Fired::TopUp {
                request_id,
                amount_minor,
            });
        }
        fired
    }

    /// Closes the open top-up request if it is `request_id`; whether it was.
    pub fn close_top_up(&mut self, request_id: &str) -> bool {
        if self.open_top_up.as_deref() == Some(request_id) {
            self.open_top_up = None;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHO: (&str, &str) = ("acme", "default");

    fn level(available_minor: i64) -> Level {
        Level {
            available_minor,
            allowance_minor: 1_000,
            allowance_left_minor: available_minor.min(1_000),
        }
    }

    fn low_balance_and_80_percent() -> WalletAlerts {
        WalletAlerts {
            rules: vec![
                AlertRule::Below { amount_minor: 500 },
                AlertRule::AllowanceUsed { percent: 80 },
            ],
            top_up: None,
        }
    }

    #[test]
    fn a_threshold_fires_once_per_crossing() {
        let alerts = low_balance_and_80_percent();
        let mut state = AlertState::armed_at(&alerts, &level(1_000), None);
        assert!(state.judge(&alerts, &level(600), false, WHO).is_empty());
        assert_eq!(
            state.judge(&alerts, &level(400), false, WHO),
            vec![Fired::Rule(AlertRule::Below { amount_minor: 500 })]
        );
        // Spending on, or a hold coming back, fires nothing more.
        assert!(state.judge(&alerts, &level(300), false, WHO).is_empty());
        assert!(state.judge(&alerts, &level(700), false, WHO).is_empty());
        assert_eq!(
            state.judge(&alerts, &level(150), false, WHO),
            vec![Fired::Rule(AlertRule::AllowanceUsed { percent: 80 })],
            "80% of 1000 used at 200 left"
        );
        assert!(state.judge(&alerts, &level(100), false, WHO).is_empty());
        // A top-up re-arms both; the next crossing fires again.
        assert!(state.judge(&alerts, &level(1_000), true, WHO).is_empty());
        assert_eq!(state.judge(&alerts, &level(100), false, WHO).len(), 2);
    }

    #[test]
    fn credit_that_leaves_the_wallet_under_a_threshold_does_not_re_arm_it() {
        let alerts = low_balance_and_80_percent();
        let mut state = AlertState::armed_at(&alerts, &level(1_000), None);
        assert_eq!(state.judge(&alerts, &level(100), false, WHO).len(), 2);
        assert!(state.judge(&alerts, &level(400), true, WHO).is_empty());
        assert!(state.judge(&alerts, &level(300), false, WHO).is_empty());
    }

    #[test]
    fn thresholds_already_passed_when_set_wait_for_a_re_arm() {
        let alerts = low_balance_and_80_percent();
        let mut state = AlertState::armed_at(&alerts, &level(100), None);
        assert!(state.judge(&alerts, &level(50), false, WHO).is_empty());
    }

    #[test]
    fn no_allowance_means_no_allowance_alert() {
        let rule = AlertRule::AllowanceUsed { percent: 1 };
        assert!(!rule.is_met(&Level::default()));
        // Rolled-over credit beyond the period's allowance is not negative use.
        let rolled_over = Level {
            available_minor: 1_500,
            allowance_minor: 1_000,
            allowance_left_minor: 1_500,
        };
        assert_eq!(rolled_over.allowance_used_minor(), 0);
    }

    #[test]
    fn one_top_up_request_per_crossing_until_a_grant_answers_it() {
        let alerts = WalletAlerts {
            rules: vec![],
            top_up: Some(TopUpPolicy {
                below_minor: 500,
                size: TopUpSize::Target {
                    target_minor: 2_000,
                },
            }),
        };
        let mut state = AlertState::armed_at(&alerts, &level(1_000), None);
        assert_eq!(
            state.judge(&alerts, &level(450), false, WHO),
            vec![Fired::TopUp {
                request_id: "topup/acme/default/1".into(),
                amount_minor: 1_550,
            }]
        );
        assert!(state.judge(&alerts, &level(10), false, WHO).is_empty());
        assert!(!state.close_top_up("topup/acme/default/9"));
        assert!(state.close_top_up("topup/acme/default/1"));
        assert!(state.judge(&alerts, &level(2_000), true, WHO).is_empty());
        assert_eq!(
            state.judge(&alerts, &level(499), false, WHO),
            vec![Fired::TopUp {
                request_id: "topup/acme/default/2".into(),
                amount_minor: 1_501,
            }]
        );
    }
}

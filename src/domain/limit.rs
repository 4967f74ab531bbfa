//! Spend limits: a cap on what the part of an account carrying one label (a project, an API
//! key, a user) may spend per day, per month or in total, across the account's wallets.
//!
//! A limit counts what it has charged in its current window (`used`) and what open holds that
//! counted against it have set aside (`held`); a hold or charge is allowed only while both
//! leave room. A hold remembers the limits it counted against, so that committing or releasing
//! it settles exactly those. Windows are UTC days and calendar months; a new window starts
//! with nothing used, and holds stay held across it. Only an overrun charged above its hold can
//! take a limit past its amount, as it can take a wallet below zero.

use serde::{Deserialize, Serialize};

use super::Denial;
use super::account::DenyReason;
use super::ids::Labels;

const DAY_MS: i64 = 86_400_000;

/// Most spend limits one account may have.
pub const LIMITS_PER_ACCOUNT_MAX: usize = 32;

/// The time a limit's amount applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitWindow {
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
    /// Ever since the limit was set.
    Total,
}

impl LimitWindow {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitWindow::Day => "day",
            LimitWindow::Month => "month",
            LimitWindow::Total => "total",
        }
    }

    pub fn parse(text: &str) -> Option<LimitWindow> {
        match text {
            "day" => Some(LimitWindow::Day),
            "month" => Some(LimitWindow::Month),
            "total" => Some(LimitWindow::Total),
            _ => None,
        }
    }

    /// Which window `now_ms` falls in: a day number, a month number, or 0.
    pub fn index_at(self, now_ms: i64) -> i64 {
        match self {
            LimitWindow::Day => now_ms.div_euclid(DAY_MS),
            LimitWindow::Month => super::period::month_number(now_ms),
            LimitWindow::Total => 0,
        }
    }

    /// When window `index` starts (`i64::MIN` for the total window).
    pub fn start_ms(self, index: i64) -> i64 {
        match self {
            LimitWindow::Day => index * DAY_MS,
            LimitWindow::Month => super::period::month_start_ms(index),
            LimitWindow::Total => i64::MIN,
        }
    }
}

/// Which part of an account a limit caps, and how much.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendLimit {
    /// The label a hold or charge must carry to count: `project` = `atlas`.
    pub label_key: String,
    pub label_value: String,
    pub window: LimitWindow,
    pub amount_minor: i64,
}

impl SpendLimit {
    /// `<key>=<value>/<window>`: unique within an account.
    pub fn id(&self) -> String {
        limit_id(&self.label_key, &self.label_value, self.window)
    }

    /// Whether a hold or charge with these labels counts against this limit.
    pub fn applies_to(&self, labels: &Labels) -> bool {
        labels.get(&self.label_key) == Some(&self.label_value)
    }
}

pub fn limit_id(key: &str, value: &str, window: LimitWindow) -> String {
    format!("{key}={value}/{}", window.as_str())
}

/// A limit and what counts against it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitState {
    pub limit: SpendLimit,
    /// The window `used_minor` belongs to.
    pub window_index: i64,
    /// Charged in that window (since the limit was set, if it was set during it).
    pub used_minor: i64,
    /// Set aside by open holds that counted against the limit.
    pub held_minor: i64,
    /// When the limit was first set: charges before it do not count.
    pub since_ms: i64,
}

impl LimitState {
    pub fn new(limit: SpendLimit, now_ms: i64) -> LimitState {
        LimitState {
            window_index: limit.window.index_at(now_ms),
            limit,
            used_minor: 0,
            held_minor: 0,
            since_ms: now_ms,
        }
    }

    /// Moves into the window `now_ms` falls in: a new window starts with nothing used.
    pub fn roll(&mut self, now_ms: i64) {
        let index = self.limit.window.index_at(now_ms);
        if index != self.window_index {
            self.window_index = index;
            self.used_minor = 0;
        }
    }

    /// This limit as it is at `now_ms` (in the window that falls in), leaving this one as it is.
    pub fn at(&self, now_ms: i64) -> LimitState {
        let mut limit = self.clone();
        limit.roll(now_ms);
        limit
    }

    /// What a new hold or charge could still take under this limit.
    pub fn room_minor(&self) -> i64 {
        (self.limit.amount_minor - self.used_minor - self.held_minor).max(0)
    }

    /// When the current window ends (`None` for a total).
    pub fn resets_at_ms(&self) -> Option<i64> {
        match self.limit.window {
            LimitWindow::Total => None,
            window => Some(window.start_ms(self.window_index + 1)),
        }
    }

    /// Since when charges count towards `used_minor`: the window's start, or when the limit
    /// was set if that was later.
    pub fn counts_from_ms(&self) -> i64 {
        self.limit
            .window
            .start_ms(self.window_index)
            .max(self.since_ms)
    }
}

/// The tightest of the limits that apply to `labels`: the one with the least room, and its
/// room. `None` when no limit applies.
pub fn tightest<'a>(
    limits: impl IntoIterator<Item = &'a LimitState>,
    labels: &Labels,
) -> Option<(&'a LimitState, i64)> {
    limits
        .into_iter()
        .filter(|l| l.limit.applies_to(labels))
        .map(|l| (l, l.room_minor()))
        .min_by(|a, b| (a.1, a.0.limit.id()).cmp(&(b.1, b.0.limit.id())))
}

/// The most a hold or charge with `labels` may take under `limits` (already in their current
/// windows): all of `amount_minor` if the tightest limit has room for it, else that room if a
/// partial hold may take it (at least `min_amount_minor`, more than zero), else the denial of
/// that limit.
pub fn limit_cap<'a>(
    limits: impl IntoIterator<Item = &'a LimitState>,
    labels: &Labels,
    amount_minor: i64,
    min_amount_minor: i64,
) -> Result<i64, Denial> {
    match tightest(limits, labels) {
        None => Ok(amount_minor),
        Some((_, room)) if room >= amount_minor => Ok(amount_minor),
        Some((_, room)) if room > 0 && room >= min_amount_minor => Ok(room),
        Some((limit, room)) => Err(Denial {
            reason: DenyReason::SpendLimitReached,
            available_minor: room,
            limit: Some(limit.limit.id()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(window: LimitWindow, amount: i64, now: i64) -> LimitState {
        LimitState::new(
            SpendLimit {
                label_key: "project".into(),
                label_value: "atlas".into(),
                window,
                amount_minor: amount,
            },
            now,
        )
    }

    #[test]
    fn a_day_limit_starts_afresh_each_utc_day_and_holds_stay() {
        let noon = 20_000 * DAY_MS + DAY_MS / 2;
        let mut day = state(LimitWindow::Day, 100, noon);
        day.used_minor = 60;
        day.held_minor = 30;
        assert_eq!(day.room_minor(), 10);
        assert_eq!(day.resets_at_ms(), Some(20_001 * DAY_MS));
        day.roll(20_001 * DAY_MS - 1);
        assert_eq!(day.used_minor, 60);
        day.roll(20_001 * DAY_MS);
        assert_eq!(
            (day.used_minor, day.held_minor, day.room_minor()),
            (0, 30, 70)
        );
        assert_eq!(day.counts_from_ms(), 20_001 * DAY_MS);
    }

    #[test]
    fn a_limit_set_during_a_window_counts_from_when_it_was_set() {
        let noon = 20_000 * DAY_MS + DAY_MS / 2;
        assert_eq!(state(LimitWindow::Day, 1, noon).counts_from_ms(), noon);
        assert_eq!(state(LimitWindow::Total, 1, noon).counts_from_ms(), noon);
        assert_eq!(state(LimitWindow::Total, 1, noon).resets_at_ms(), None);
    }

    #[test]
    fn months_are_calendar_months() {
        let window = LimitWindow::Month;
        let jan_31 = 20_484 * DAY_MS; // 2026-01-31
        let index = window.index_at(jan_31);
        assert_eq!(window.start_ms(index + 1), 20_485 * DAY_MS, "2026-02-01");
        assert_eq!(window.index_at(20_485 * DAY_MS), index + 1);
    }

    #[test]
    fn the_tightest_applicable_limit_decides() {
        let now = 0;
        let mut daily = state(LimitWindow::Day, 50, now);
        daily.used_minor = 45;
        let total = state(LimitWindow::Total, 1_000, now);
        let mut other = state(LimitWindow::Day, 1, now);
        other.limit.label_value = "zephyr".into();
        let labels: Labels = [("project".to_owned(), "atlas".to_owned())].into();
        let limits = [total, daily, other];
        let (limit, room) = tightest(&limits, &labels).unwrap();
        assert_eq!((limit.limit.id().as_str(), room), ("project=atlas/day", 5));
        assert!(tightest(&limits, &Labels::new()).is_none());
    }
}

//! Recurring allowances: an included grant that resets at each period boundary (monthly or
//! yearly, anchored to a billing instant), judged by the store's clock.
//!
//! Periods are counted in UTC calendar months from the anchor: the k-th period starts `k`
//! months (or `12k` for yearly) after the anchor, on the anchor's day of the month, or on the
//! month's last day when it is shorter (an anchor on the 31st resets on 30 April and 28 or 29
//! February), at the anchor's time of day. `lua/periods.lua` carries the same arithmetic.

use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;

/// How often a recurring grant resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Month,
    Year,
}

/// Months since January 1970 of the UTC month `now_ms` falls in.
pub(crate) fn month_number(now_ms: i64) -> i64 {
    let (year, month, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
    (year - 1970) * 12 + (month - 1)
}

/// When month number `index` (see [`month_number`]) starts.
pub(crate) fn month_start_ms(index: i64) -> i64 {
    let (year, month) = (1970 + index.div_euclid(12), index.rem_euclid(12) + 1);
    days_from_civil(year, month, 1) * DAY_MS
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    pub fn parse(text: &str) -> Option<Period> {
        match text {
            "month" => Some(Period::Month),
            "year" => Some(Period::Year),
            _ => None,
        }
    }

    fn months(self) -> i64 {
        match self {
            Period::Month => 1,
            Period::Year => 12,
        }
    }
}

/// A recurring grant's terms: its amount is given anew each period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    pub period: Period,
    /// Start of the first period (the billing instant), Unix milliseconds, not before 1970;
    /// `None`: when the grant was created. Part of the terms as given, so that a repeated
    /// grant without an anchor is the same grant.
    pub anchor_ms: Option<i64>,
    /// Most unused credit carried into the next period; 0: nothing rolls over.
    pub rollover_max_minor: i64,
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    days_from_civil(next_year, next_month, 1) - days_from_civil(year, month, 1)
}

impl Period {
    /// When period `index` starts, counting from `anchor_ms`.
    pub fn start_ms(self, anchor_ms: i64, index: i64) -> i64 {
        let days = anchor_ms.div_euclid(DAY_MS);
        let time_of_day = anchor_ms - days * DAY_MS;
        let (year, month, day) = civil_from_days(days);
        let months = year * 12 + (month - 1) + index * self.months();
        let (year, month) = (months.div_euclid(12), months.rem_euclid(12) + 1);
        let day = day.min(days_in_month(year, month));
        days_from_civil(year, month, day) * DAY_MS + time_of_day
    }

    /// The period `now_ms` falls in, counting from `anchor_ms` (0 before the anchor).
    pub fn index_at(self, anchor_ms: i64, now_ms: i64) -> i64 {
        if now_ms < anchor_ms {
            return 0;
        }
        let (now_year, now_month, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
        let (year, month, _) = civil_from_days(anchor_ms.div_euclid(DAY_MS));
        let months = (now_year * 12 + now_month) - (year * 12 + month);
        let index = months.div_euclid(self.months());
        if self.start_ms(anchor_ms, index) > now_ms {
            index - 1
        } else {
            index
        }
    }
}

/// What a reset did to a grant: its unused credit beyond the rollover cap lapsed, and a new
/// allowance (plus any rollover the lapse did not cover) was added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reset {
    /// The period the grant is now in.
    pub index: i64,
    pub lapsed_minor: i64,
    pub refilled_minor: i64,
}

/// Moves a grant with `remaining_minor` (of which `held_minor` is held) from period `from` into
/// period `to` (> `from`): what was held stays held, unused credit rolls over up to the cap
/// (over several periods, each period's unused allowance rolls into the next), and the amount
/// is given again.
pub fn reset(
    recurrence: &Recurrence,
    amount_minor: i64,
    remaining_minor: i64,
    held_minor: i64,
    from: i64,
    to: i64,
) -> Reset {
    debug_assert!(to > from);
    let unused = remaining_minor - held_minor;
    let cap = recurrence.rollover_max_minor;
    let mut carried = unused.min(cap);
    if to - from >= 2 {
        // Whole periods passed unused: each one's allowance could roll into the next.
        carried = cap.min(carried.saturating_add((to - from - 1).saturating_mul(amount_minor)));
    }
    Reset {
        index: to,
        lapsed_minor: (unused - carried).max(0),
        refilled_minor: amount_minor + (carried - unused).max(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(year: i64, month: i64, day: i64, hour: i64) -> i64 {
        days_from_civil(year, month, day) * DAY_MS + hour * 3_600_000
    }

    fn monthly(rollover_max_minor: i64) -> Recurrence {
        Recurrence {
            period: Period::Month,
            anchor_ms: None,
            rollover_max_minor,
        }
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-1, 0, 59, 365, 11_016, 11_017, 20_000, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2026, 2), 28);
        assert_eq!(days_in_month(2026, 12), 31);
    }

    #[test]
    fn months_start_on_the_billing_day_or_the_last_day_of_a_shorter_month() {
        let (month, anchor) = (Period::Month, at(2026, 1, 31, 9));
        assert_eq!(month.start_ms(anchor, 0), at(2026, 1, 31, 9));
        assert_eq!(month.start_ms(anchor, 1), at(2026, 2, 28, 9));
        assert_eq!(month.start_ms(anchor, 2), at(2026, 3, 31, 9));
        assert_eq!(month.start_ms(anchor, 3), at(2026, 4, 30, 9));
        assert_eq!(month.start_ms(anchor, 13), at(2027, 2, 28, 9));
        let leap = at(2024, 2, 29, 0);
        assert_eq!(Period::Year.start_ms(leap, 1), at(2025, 2, 28, 0));
        assert_eq!(Period::Year.start_ms(leap, 4), at(2028, 2, 29, 0));
    }

    #[test]
    fn the_period_of_an_instant_changes_exactly_at_its_start() {
        let (month, anchor) = (Period::Month, at(2026, 1, 15, 12));
        assert_eq!(
            month.index_at(anchor, at(2026, 1, 1, 0)),
            0,
            "before the anchor"
        );
        assert_eq!(month.index_at(anchor, at(2026, 1, 15, 12)), 0);
        assert_eq!(month.index_at(anchor, at(2026, 2, 15, 12) - 1), 0);
        assert_eq!(month.index_at(anchor, at(2026, 2, 15, 12)), 1);
        assert_eq!(month.index_at(anchor, at(2026, 3, 1, 0)), 1);
        assert_eq!(month.index_at(anchor, at(2027, 1, 15, 11)), 11);
        assert_eq!(month.index_at(anchor, at(2027, 1, 15, 12)), 12);
        assert_eq!(Period::Year.index_at(anchor, at(2027, 1, 15, 11)), 0);
        assert_eq!(Period::Year.index_at(anchor, at(2027, 1, 15, 12)), 1);
    }

    #[test]
    fn unused_credit_lapses_beyond_the_rollover_cap_and_held_credit_stays() {
        let none = monthly(0);
        assert_eq!(
            reset(&none, 100, 30, 10, 0, 1),
            Reset {
                index: 1,
                lapsed_minor: 20,
                refilled_minor: 100
            },
            "20 unused lapse; the 10 held stay: 110 remain"
        );
        let capped = monthly(15);
        assert_eq!(
            reset(&capped, 100, 30, 10, 0, 1),
            Reset {
                index: 1,
                lapsed_minor: 5,
                refilled_minor: 100
            }
        );
        assert_eq!(
            reset(&capped, 100, 0, 0, 0, 3),
            Reset {
                index: 3,
                lapsed_minor: 0,
                refilled_minor: 115
            },
            "periods that passed unused roll over up to the cap"
        );
    }
}

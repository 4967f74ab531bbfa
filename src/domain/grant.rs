//! Grants and the consumption order: which lots of credit pay for a hold or a charge, and how
//! much each pays.
//!
//! One rule, everywhere (DESIGN.md): among a wallet's active grants that admit the feature,
//! (1) grants scoped to specific features before unscoped ones, (2) lower priority number first,
//! (3) earliest expiry first (never-expiring last), (4) oldest first; the grant id breaks the
//! remaining ties so that every store computes the same split.

use serde::{Deserialize, Serialize};

use super::ids::{FeatureId, GrantId, WalletId};
use super::period::{Recurrence, Reset, reset};

/// Most active grants in one wallet: bounds the work of every draw.
pub const GRANTS_PER_WALLET_MAX: usize = 64;

/// Most features one grant may be scoped to.
pub const GRANT_FEATURES_MAX: usize = 32;

/// Where a grant's credits came from; decides its default priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// From a plan's allowance.
    Included,
    /// Free credit, e.g. a trial.
    Promotional,
    /// Bought.
    Prepaid,
}

impl GrantKind {
    /// Lower is spent first: included, then promotional, then prepaid.
    pub fn default_priority(self) -> u32 {
        match self {
            GrantKind::Included => 10,
            GrantKind::Promotional => 20,
            GrantKind::Prepaid => 30,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::Included => "included",
            GrantKind::Promotional => "promotional",
            GrantKind::Prepaid => "prepaid",
        }
    }

    pub fn parse(text: &str) -> Option<GrantKind> {
        match text {
            "included" => Some(GrantKind::Included),
            "promotional" => Some(GrantKind::Promotional),
            "prepaid" => Some(GrantKind::Prepaid),
            _ => None,
        }
    }
}

/// What a grant is made of, as the granter said it. Two grants with the same id must have the
/// same terms, which is how a repeated grant is recognised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTerms {
    pub id: GrantId,
    pub wallet: WalletId,
    pub kind: GrantKind,
    /// Lower is spent first.
    pub priority: u32,
    pub amount_minor: i64,
    /// After this instant the grant pays for nothing new.
    pub expires_at_ms: Option<i64>,
    /// Features this grant may pay for, sorted and without repeats; empty means any.
    pub features: Vec<FeatureId>,
    /// For a plan's allowance: the amount is given again every period.
    #[serde(default)]
    pub recurrence: Option<Recurrence>,
}

/// A grant and what is left of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub terms: GrantTerms,
    /// Not yet charged: `amount − charged − voided`.
    pub remaining_minor: i64,
    /// Set aside by open holds; always `≤ remaining_minor`.
    pub held_minor: i64,
    pub created_at_ms: i64,
    pub voided_at_ms: Option<i64>,
    /// For a recurring grant, the period its remaining amount belongs to (0 is the first).
    #[serde(default)]
    pub period_index: i64,
    /// For a recurring grant, what it had when its current period started (the amount, what
    /// rolled over, what stayed held): what its use in the period is counted against.
    #[serde(default)]
    pub period_granted_minor: Option<i64>,
}

/// Whether a grant can pay for new holds and charges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantStatus {
    Active,
    Expired,
    Voided,
}

impl Grant {
    pub fn new(terms: GrantTerms, now_ms: i64) -> Grant {
        Grant {
            remaining_minor: terms.amount_minor,
            held_minor: 0,
            created_at_ms: now_ms,
            voided_at_ms: None,
            period_granted_minor: terms.recurrence.map(|_| terms.amount_minor),
            period_index: terms.recurrence.map_or(0, |recurrence| {
                let anchor_ms = recurrence.anchor_ms.unwrap_or(now_ms);
                recurrence.period.index_at(anchor_ms, now_ms)
            }),
            terms,
        }
    }

    /// What the grant's use is counted against: its amount, or for a recurring grant what it
    /// had when the current period started.
    pub fn granted_minor(&self) -> i64 {
        self.period_granted_minor.unwrap_or(self.terms.amount_minor)
    }

    /// The most this grant could ever hold: what remains of it, or for a recurring grant twice
    /// its amount and rollover together (held credit carried into a period, plus a new amount,
    /// plus what rolled over). A wallet keeps the sum of these and its flex cap within the
    /// money bound, so no reset or draw can leave it.
    pub fn bound_minor(&self) -> i64 {
        match self.terms.recurrence {
            Some(recurrence) => 2 * (self.terms.amount_minor + recurrence.rollover_max_minor),
            None => self.remaining_minor,
        }
    }

    /// When a recurring grant's periods are counted from.
    pub fn anchor_ms(&self) -> Option<i64> {
        let recurrence = self.terms.recurrence?;
        Some(recurrence.anchor_ms.unwrap_or(self.created_at_ms))
    }

    /// When a recurring grant's current period started and the next one starts.
    pub fn period_bounds_ms(&self) -> Option<(i64, i64)> {
        let (recurrence, anchor_ms) = (self.terms.recurrence?, self.anchor_ms()?);
        let period = recurrence.period;
        Some((
            period.start_ms(anchor_ms, self.period_index),
            period.start_ms(anchor_ms, self.period_index + 1),
        ))
    }

    /// Brings a recurring grant into the period `now_ms` falls in: what was held stays held,
    /// unused credit lapses beyond the rollover cap, and the amount is given again. Returns
    /// what the reset did, if one was due. Expired and voided grants no longer reset.
    pub fn roll(&mut self, now_ms: i64) -> Option<Reset> {
        let (recurrence, anchor_ms) = (self.terms.recurrence?, self.anchor_ms()?);
        let to = recurrence.period.index_at(anchor_ms, now_ms);
        if to <= self.period_index || !self.is_active(now_ms) {
            return None;
        }
        let done = reset(
            &recurrence,
            self.terms.amount_minor,
            self.remaining_minor,
            self.held_minor,
            self.period_index,
            to,
        );
        self.remaining_minor += done.refilled_minor - done.lapsed_minor;
        self.period_index = to;
        self.period_granted_minor = Some(self.remaining_minor);
        Some(done)
    }

    pub fn status(&self, now_ms: i64) -> GrantStatus {
        if self.voided_at_ms.is_some() {
            GrantStatus::Voided
        } else if self.terms.expires_at_ms.is_some_and(|at| at <= now_ms) {
            GrantStatus::Expired
        } else {
            GrantStatus::Active
        }
    }

    pub fn is_active(&self, now_ms: i64) -> bool {
        self.status(now_ms) == GrantStatus::Active
    }

    /// Whether this grant's scope lets it pay for `feature`.
    pub fn admits(&self, feature: &FeatureId) -> bool {
        self.terms.features.is_empty() || self.terms.features.binary_search(feature).is_ok()
    }

    /// Takes back credit a hold gives back to this grant after it was voided: that credit
    /// stopped being spendable with the void, so it leaves the grant (and the ledger must say
    /// where it went). Returns whether anything left.
    pub fn lapse_released(&mut self, amount_minor: i64) -> bool {
        if self.voided_at_ms.is_none() || amount_minor == 0 {
            return false;
        }
        self.remaining_minor -= amount_minor;
        true
    }

    /// What a new hold could take from this grant.
    pub fn spendable_minor(&self) -> i64 {
        self.remaining_minor - self.held_minor
    }

    /// The sort key of the consumption order.
    fn order_key(&self) -> (bool, u32, i64, i64, &GrantId) {
        (
            self.terms.features.is_empty(),
            self.terms.priority,
            self.terms.expires_at_ms.unwrap_or(i64::MAX),
            self.created_at_ms,
            &self.terms.id,
        )
    }
}

/// The part of an amount paid by one grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Portion {
    pub grant: GrantId,
    pub amount_minor: i64,
}

/// Why a draw could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// Grants admit the feature, but together they hold only `available_minor`.
    Insufficient { available_minor: i64 },
    /// The wallet has spendable credit, but no grant of it may pay for this feature.
    FeatureNotAllowed,
}

/// Indexes of the grants that may pay for `feature` now, in consumption order.
pub fn consumption_order(grants: &[Grant], feature: &FeatureId, now_ms: i64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..grants.len())
        .filter(|&i| grants[i].is_active(now_ms) && grants[i].admits(feature))
        .collect();
    order.sort_by(|&a, &b| grants[a].order_key().cmp(&grants[b].order_key()));
    order
}

/// All the grants, active ones first in consumption order (as they would pay for a feature
/// that every grant admits), then the rest: how a wallet's buckets are shown.
pub fn display_order(grants: &[Grant], now_ms: i64) -> Vec<&Grant> {
    let mut ordered: Vec<&Grant> = grants.iter().collect();
    ordered.sort_by(|a, b| {
        (!a.is_active(now_ms), a.order_key()).cmp(&(!b.is_active(now_ms), b.order_key()))
    });
    ordered
}

/// How much of a grant has been charged (and voided), as a percentage of what it was given
/// ([`Grant::granted_minor`]: in the current period for a recurring grant), with up to two
/// decimals (rounded down): `80` when 8.00 of 10.00 is spent.
pub fn used_percent(grant: &Grant) -> String {
    let granted = grant.granted_minor();
    if granted == 0 {
        return "0".into();
    }
    let used = (granted - grant.remaining_minor).max(0) as i128;
    let hundredths = used * 10_000 / granted as i128;
    let (whole, fraction) = (hundredths / 100, hundredths % 100);
    match fraction {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

/// What a wallet may spend past its grants, and what it owes. All zero by default: no flex,
/// no debt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Postpaid {
    /// Flex: how far spending may continue once the grants are used up (the billing threshold);
    /// 0 turns flex off.
    pub flex_cap_minor: i64,
    /// Flex spent so far.
    pub flex_used_minor: i64,
    /// Flex set aside by open holds.
    pub flex_held_minor: i64,
    /// Usage charged beyond everything the wallet could pay (an overrun charged in full under
    /// `charge_actual`). It gates the wallet, and the next unscoped grant added pays it first.
    pub debt_minor: i64,
}

impl Postpaid {
    /// Flex a new hold or charge could still take.
    pub fn flex_room_minor(&self) -> i64 {
        (self.flex_cap_minor - self.flex_used_minor - self.flex_held_minor).max(0)
    }

    pub fn is_zero(&self) -> bool {
        *self == Postpaid::default()
    }

    /// Pays what the wallet owes from a new grant of it, if the grant may pay for anything and
    /// is active: the debt left by an overrun charged in full is the first thing new credit
    /// pays. Returns what was repaid (0 for nothing). `lua/add_grant.lua` follows the same rule.
    pub fn repay_from(&mut self, grant: &mut Grant, now_ms: i64) -> i64 {
        let repaid = self.debt_minor.min(grant.remaining_minor);
        if repaid <= 0 || !grant.terms.features.is_empty() || !grant.is_active(now_ms) {
            return 0;
        }
        self.debt_minor -= repaid;
        grant.remaining_minor -= repaid;
        repaid
    }
}

/// What the grants that admit `feature` could pay now, before flex and debt.
fn from_grants(grants: &[Grant], feature: &FeatureId, now_ms: i64) -> i64 {
    grants
        .iter()
        .filter(|g| g.is_active(now_ms) && g.admits(feature))
        .map(Grant::spendable_minor)
        .sum()
}

/// What a new hold or charge for `feature` could take from a wallet now: its grants that admit
/// the feature, then flex, less any debt.
pub fn available_minor(
    grants: &[Grant],
    postpaid: &Postpaid,
    feature: &FeatureId,
    now_ms: i64,
) -> i64 {
    (from_grants(grants, feature, now_ms) + postpaid.flex_room_minor() - postpaid.debt_minor).max(0)
}

/// Splits `amount_minor` over the grants in consumption order, then flex, without changing
/// anything.
///
/// A zero amount draws nothing and always succeeds.
pub fn plan_draw(
    grants: &[Grant],
    postpaid: &Postpaid,
    feature: &FeatureId,
    now_ms: i64,
    amount_minor: i64,
) -> Result<Vec<Portion>, Shortfall> {
    debug_assert!(amount_minor >= 0);
    let available = available_minor(grants, postpaid, feature, now_ms);
    if available < amount_minor {
        let admitted = from_grants(grants, feature, now_ms) + postpaid.flex_room_minor();
        let elsewhere = grants
            .iter()
            .any(|g| g.is_active(now_ms) && g.spendable_minor() > 0 && !g.admits(feature));
        return Err(if admitted == 0 && elsewhere {
            Shortfall::FeatureNotAllowed
        } else {
            Shortfall::Insufficient {
                available_minor: available,
            }
        });
    }
    let mut left = amount_minor;
    let mut split = Vec::new();
    for i in consumption_order(grants, feature, now_ms) {
        if left == 0 {
            break;
        }
        let take = grants[i].spendable_minor().min(left);
        if take > 0 {
            split.push(Portion {
                grant: grants[i].terms.id.clone(),
                amount_minor: take,
            });
            left -= take;
        }
    }
    if left > 0 {
        // Within the flex room: `available` covered the amount.
        split.push(Portion {
            grant: GrantId::flex(),
            amount_minor: left,
        });
    }
    Ok(split)
}

/// What a commit larger than its hold is charged beyond the hold, under the feature's overrun
/// policy. Judged after the hold itself is charged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverrunCharge {
    /// Drawn from the wallet as a charge would be (grants, then flex).
    pub drawn: Vec<Portion>,
    /// Charged beyond everything the wallet could pay: becomes debt.
    pub debt_minor: i64,
}

impl OverrunCharge {
    pub fn charged_minor(&self) -> i64 {
        self.drawn.iter().map(|p| p.amount_minor).sum::<i64>() + self.debt_minor
    }

    /// The whole split of the overrun, debt last.
    pub fn into_split(self) -> Vec<Portion> {
        let mut split = self.drawn;
        if self.debt_minor > 0 {
            split.push(Portion {
                grant: GrantId::debt(),
                amount_minor: self.debt_minor,
            });
        }
        split
    }
}

/// Charges `over_minor` beyond a hold as `policy` says: nothing (`cap_at_hold`), up to an
/// allowance from what the wallet can pay (`allow_up_to`), or all of it, any part the wallet
/// cannot pay becoming debt (`charge_actual`).
pub fn plan_overrun(
    grants: &[Grant],
    postpaid: &Postpaid,
    feature: &FeatureId,
    now_ms: i64,
    over_minor: i64,
    policy: OverrunPolicy,
) -> OverrunCharge {
    let wanted = match policy {
        OverrunPolicy::CapAtHold => 0,
        OverrunPolicy::AllowUpTo { allowance_minor } => over_minor.min(allowance_minor),
        OverrunPolicy::ChargeActual => over_minor,
    };
    let payable = wanted.min(available_minor(grants, postpaid, feature, now_ms));
    let drawn = plan_draw(grants, postpaid, feature, now_ms, payable)
        .expect("a draw within what is available succeeds");
    OverrunCharge {
        drawn,
        debt_minor: match policy {
            OverrunPolicy::ChargeActual => wanted - payable,
            _ => 0,
        },
    }
}

/// What a commit larger than its hold is charged beyond the hold; set per feature in the
/// catalog. Whatever the policy, the overrun is recorded in the ledger entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum OverrunPolicy {
    /// Charge at most the hold.
    #[default]
    CapAtHold,
    /// Charge up to this much beyond the hold, from what the wallet can pay.
    AllowUpTo { allowance_minor: i64 },
    /// Charge all of it: the usage happened. What the wallet cannot pay becomes debt, and the
    /// wallet is gated until a top-up covers it.
    ChargeActual,
}

impl OverrunPolicy {
    pub fn name(self) -> &'static str {
        match self {
            OverrunPolicy::CapAtHold => "cap_at_hold",
            OverrunPolicy::AllowUpTo { .. } => "allow_up_to",
            OverrunPolicy::ChargeActual => "charge_actual",
        }
    }
}

/// What happens to work in flight when the wallet paying for it runs out; set per feature in
/// the catalog and kept by each hold. New work is refused either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// Holds already taken run to their end; only new money is refused.
    #[default]
    FinishRunning,
    /// Work stops at once: extending a hold is refused, even by time alone, while nothing is
    /// spendable for its feature.
    StopRunning,
}

impl StopRule {
    pub fn name(self) -> &'static str {
        match self {
            StopRule::FinishRunning => "finish_running",
            StopRule::StopRunning => "stop_running",
        }
    }

    pub fn parse(text: &str) -> Option<StopRule> {
        match text {
            "finish_running" => Some(StopRule::FinishRunning),
            "stop_running" => Some(StopRule::StopRunning),
            _ => None,
        }
    }
}

/// Divides a hold's split into what is charged and what is released when `charge_minor` of it
/// is committed: the portions are charged in the order they were taken.
pub fn settle(split: &[Portion], charge_minor: i64) -> (Vec<Portion>, Vec<Portion>) {
    let mut left = charge_minor;
    let mut charged = Vec::new();
    let mut released = Vec::new();
    for portion in split {
        let take = portion.amount_minor.min(left);
        left -= take;
        if take > 0 {
            charged.push(Portion {
                grant: portion.grant.clone(),
                amount_minor: take,
            });
        }
        if portion.amount_minor > take {
            released.push(Portion {
                grant: portion.grant.clone(),
                amount_minor: portion.amount_minor - take,
            });
        }
    }
    (charged, released)
}

/// Adds `extra` to `split`, merging portions of the same grant and keeping the first-taken order.
pub fn merge_split(split: &mut Vec<Portion>, extra: Vec<Portion>) {
    for portion in extra {
        match split.iter_mut().find(|p| p.grant == portion.grant) {
            Some(existing) => existing.amount_minor += portion.amount_minor,
            None => split.push(portion),
        }
    }
}

/// A wallet's balance in four figures, over its active grants plus holds on any grant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalletTotals {
    /// Amounts of the active grants.
    pub granted_minor: i64,
    /// Open holds, on grants and on flex.
    pub held_minor: i64,
    /// Charged from the active grants.
    pub spent_minor: i64,
    /// What a new hold for a feature every grant admits could take: active remaining less
    /// held, plus flex room, less debt.
    pub available_minor: i64,
}

impl WalletTotals {
    pub fn of(grants: &[Grant], postpaid: &Postpaid, now_ms: i64) -> WalletTotals {
        let mut totals = WalletTotals {
            held_minor: postpaid.flex_held_minor,
            ..WalletTotals::default()
        };
        let mut spendable = 0;
        for grant in grants {
            totals.held_minor += grant.held_minor;
            if grant.is_active(now_ms) {
                totals.granted_minor += grant.granted_minor();
                totals.spent_minor += grant.granted_minor() - grant.remaining_minor;
                spendable += grant.spendable_minor();
            }
        }
        totals.available_minor =
            (spendable + postpaid.flex_room_minor() - postpaid.debt_minor).max(0);
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(name: &str) -> FeatureId {
        FeatureId::parse(name).unwrap()
    }

    fn grant(id: &str, kind: GrantKind, amount: i64) -> Grant {
        Grant::new(
            GrantTerms {
                id: GrantId::parse(id).unwrap(),
                wallet: WalletId::default_wallet(),
                kind,
                priority: kind.default_priority(),
                amount_minor: amount,
                expires_at_ms: None,
                features: vec![],
                recurrence: None,
            },
            0,
        )
    }

    fn ids(split: &[Portion]) -> Vec<(&str, i64)> {
        split
            .iter()
            .map(|p| (p.grant.as_str(), p.amount_minor))
            .collect()
    }

    #[test]
    fn draws_included_then_promotional_then_prepaid() {
        let grants = vec![
            grant("prepaid", GrantKind::Prepaid, 100),
            grant("trial", GrantKind::Promotional, 10),
            grant("plan", GrantKind::Included, 20),
        ];
        let split = plan_draw(&grants, &Postpaid::default(), &feature("chat"), 1, 50).unwrap();
        assert_eq!(ids(&split), [("plan", 20), ("trial", 10), ("prepaid", 20)]);
    }

    #[test]
    fn scoped_grants_pay_before_unscoped_ones_whatever_their_priority() {
        let mut scoped = grant("agents-only", GrantKind::Prepaid, 30);
        scoped.terms.features = vec![feature("agent.minutes"), feature("cloud.inference")];
        let grants = vec![grant("plan", GrantKind::Included, 30), scoped];
        let split = plan_draw(
            &grants,
            &Postpaid::default(),
            &feature("agent.minutes"),
            1,
            40,
        )
        .unwrap();
        assert_eq!(ids(&split), [("agents-only", 30), ("plan", 10)]);
        let split = plan_draw(&grants, &Postpaid::default(), &feature("chat"), 1, 30).unwrap();
        assert_eq!(
            ids(&split),
            [("plan", 30)],
            "the scoped grant never pays for chat"
        );
        assert_eq!(
            plan_draw(&grants, &Postpaid::default(), &feature("chat"), 1, 31),
            Err(Shortfall::Insufficient {
                available_minor: 30
            })
        );
    }

    #[test]
    fn earlier_expiry_then_older_grant_pays_first() {
        let mut late = grant("late", GrantKind::Prepaid, 10);
        late.terms.expires_at_ms = Some(2_000);
        let mut soon = grant("soon", GrantKind::Prepaid, 10);
        soon.terms.expires_at_ms = Some(1_000);
        let mut never_old = grant("never-old", GrantKind::Prepaid, 10);
        never_old.created_at_ms = -5;
        let never_new = grant("never-new", GrantKind::Prepaid, 10);
        let grants = vec![never_new, late, never_old, soon];
        let split = plan_draw(&grants, &Postpaid::default(), &feature("f"), 1, 40).unwrap();
        assert_eq!(
            ids(&split),
            [
                ("soon", 10),
                ("late", 10),
                ("never-old", 10),
                ("never-new", 10)
            ]
        );
    }

    #[test]
    fn explicit_priority_overrides_the_kind() {
        let mut urgent = grant("urgent", GrantKind::Prepaid, 10);
        urgent.terms.priority = 1;
        let grants = vec![grant("plan", GrantKind::Included, 10), urgent];
        let split = plan_draw(&grants, &Postpaid::default(), &feature("f"), 1, 15).unwrap();
        assert_eq!(ids(&split), [("urgent", 10), ("plan", 5)]);
    }

    #[test]
    fn expired_voided_and_held_credit_never_pays() {
        let mut expired = grant("expired", GrantKind::Included, 100);
        expired.terms.expires_at_ms = Some(1_000);
        let mut voided = grant("voided", GrantKind::Included, 100);
        voided.voided_at_ms = Some(0);
        let mut held = grant("held", GrantKind::Prepaid, 100);
        held.held_minor = 70;
        let grants = vec![expired, voided, held];
        assert_eq!(
            available_minor(&grants, &Postpaid::default(), &feature("f"), 1_000),
            30
        );
        assert_eq!(
            plan_draw(&grants, &Postpaid::default(), &feature("f"), 1_000, 31),
            Err(Shortfall::Insufficient {
                available_minor: 30
            })
        );
        assert_eq!(
            available_minor(&grants, &Postpaid::default(), &feature("f"), 999),
            130,
            "a grant is active until its expiry instant"
        );
    }

    #[test]
    fn credit_that_only_other_features_may_use_is_reported_as_such() {
        let mut scoped = grant("trial", GrantKind::Promotional, 10);
        scoped.terms.features = vec![feature("agent.minutes")];
        assert_eq!(
            plan_draw(&[scoped], &Postpaid::default(), &feature("chat"), 1, 1),
            Err(Shortfall::FeatureNotAllowed)
        );
    }

    #[test]
    fn buckets_are_shown_in_consumption_order_with_their_use() {
        let mut plan = grant("plan", GrantKind::Included, 1_000);
        plan.remaining_minor = 200;
        let mut expired = grant("old", GrantKind::Included, 10);
        expired.terms.expires_at_ms = Some(5);
        let grants = vec![grant("bought", GrantKind::Prepaid, 10), expired, plan];
        let order: Vec<&str> = display_order(&grants, 10)
            .iter()
            .map(|g| g.terms.id.as_str())
            .collect();
        assert_eq!(order, ["plan", "bought", "old"]);
        assert_eq!(used_percent(&grants[2]), "80");
        let mut third = grant("third", GrantKind::Prepaid, 3);
        third.remaining_minor = 2;
        assert_eq!(used_percent(&third), "33.33");
        third.remaining_minor = 0;
        assert_eq!(used_percent(&third), "100");
    }

    #[test]
    fn flex_pays_after_every_grant_up_to_its_cap_and_debt_comes_off_first() {
        let grants = vec![grant("bought", GrantKind::Prepaid, 10)];
        let mut postpaid = Postpaid {
            flex_cap_minor: 50,
            flex_used_minor: 20,
            flex_held_minor: 5,
            debt_minor: 0,
        };
        assert_eq!(available_minor(&grants, &postpaid, &feature("f"), 1), 35);
        let split = plan_draw(&grants, &postpaid, &feature("f"), 1, 35).unwrap();
        assert_eq!(ids(&split), [("bought", 10), ("~flex", 25)]);
        assert_eq!(
            plan_draw(&grants, &postpaid, &feature("f"), 1, 36),
            Err(Shortfall::Insufficient {
                available_minor: 35
            })
        );
        postpaid.debt_minor = 40;
        assert_eq!(available_minor(&grants, &postpaid, &feature("f"), 1), 0);
        assert_eq!(
            WalletTotals::of(&grants, &postpaid, 1).available_minor,
            0,
            "debt gates the wallet"
        );
    }

    #[test]
    fn an_overrun_is_charged_as_the_policy_says() {
        let grants = vec![grant("bought", GrantKind::Prepaid, 10)];
        let none = Postpaid::default();
        let f = feature("f");
        let over = |policy| plan_overrun(&grants, &none, &f, 1, 25, policy);
        assert_eq!(over(OverrunPolicy::CapAtHold), OverrunCharge::default());
        let allowed = over(OverrunPolicy::AllowUpTo { allowance_minor: 5 });
        assert_eq!(
            (ids(&allowed.drawn), allowed.debt_minor),
            (vec![("bought", 5)], 0)
        );
        let capped_by_balance = over(OverrunPolicy::AllowUpTo {
            allowance_minor: 100,
        });
        assert_eq!(capped_by_balance.charged_minor(), 10);
        let actual = over(OverrunPolicy::ChargeActual);
        assert_eq!(actual.charged_minor(), 25);
        assert_eq!(ids(&actual.into_split()), [("bought", 10), ("~debt", 15)]);
    }

    #[test]
    fn zero_draws_nothing() {
        assert_eq!(
            plan_draw(&[], &Postpaid::default(), &feature("f"), 1, 0),
            Ok(vec![])
        );
    }

    #[test]
    fn settling_charges_portions_in_the_order_they_were_taken() {
        let split = vec![
            Portion {
                grant: GrantId::parse("a").unwrap(),
                amount_minor: 20,
            },
            Portion {
                grant: GrantId::parse("b").unwrap(),
                amount_minor: 10,
            },
        ];
        let (charged, released) = settle(&split, 25);
        assert_eq!(ids(&charged), [("a", 20), ("b", 5)]);
        assert_eq!(ids(&released), [("b", 5)]);
        let (charged, released) = settle(&split, 0);
        assert!(charged.is_empty());
        assert_eq!(ids(&released), [("a", 20), ("b", 10)]);
        let (charged, released) = settle(&split, 30);
        assert_eq!(ids(&charged), [("a", 20), ("b", 10)]);
        assert!(released.is_empty());
    }

    #[test]
    fn merging_keeps_one_portion_per_grant() {
        let p = |g: &str, a| Portion {
            grant: GrantId::parse(g).unwrap(),
            amount_minor: a,
        };
        let mut split = vec![p("a", 1)];
        merge_split(&mut split, vec![p("a", 2), p("b", 3)]);
        assert_eq!(ids(&split), [("a", 3), ("b", 3)]);
    }
}

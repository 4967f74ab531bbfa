//! `MemoryStore`: the balance store in this process, for the embedded single-node default and as
//! the reference the Redis store is tested against.
//!
//! Each account lives in one map entry; an operation takes that entry's lock, does all of its
//! checks, then all of its writes and its outbox entries, and lets go: atomic per account, as a
//! Lua script is in Redis. Memory is not durable, so on the embedded default the sync loop makes
//! every acknowledged write durable in the ledger first (see [`crate::sync`]).

mod admin;
mod expire;
mod outbox;
mod rebuild;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use dashmap::DashMap;
use dashmap::mapref::one::RefMut;

use super::{
    AccountAdmin, AccountSnapshot, AccountUpdate, AccountView, AlertsView, ChargeOp, ChargeReceipt,
    CheckReceipt, CommitOp, CommitReceipt, Decision, Denial, Durable, Expiry, ExtendOp,
    ExtendReceipt, GrantEntry, GrantReceipt, Idempotency, LimitChange, OutboxStats, OutboxStore,
    Rebuild, ReleaseReceipt, ReserveOp, ReserveReceipt, Spending, StoreError, Swept, VoidReceipt,
    WalletView, Written,
};
use crate::clock::Clock;
use crate::domain::alert::{AlertRule, AlertState, Fired, Level, WalletAlerts};
use crate::domain::entry_id;
use crate::domain::grant::{
    GRANTS_PER_WALLET_MAX, WalletTotals, available_minor, merge_split, plan_draw, plan_overrun,
    settle,
};
use crate::domain::limit::{LIMITS_PER_ACCOUNT_MAX, limit_cap, limit_id};
use crate::domain::money::MINOR_MAX;
use crate::domain::{
    Account, AccountId, AccountStatus, CommitRecord, DenyReason, FeatureId, Grant, GrantId,
    GrantKind, GrantTerms, Hold, HoldState, IdempotencyKey, Labels, LimitState, Portion, Postpaid,
    ReleaseRecord, ReservationId, Shortfall, SpendLimit, StopRule, WalletId,
};
use crate::events::{EventDetail, Events, WalletEvent, WalletEventKind};
use crate::record::{
    AlertsSnapshot, EntryKind, LedgerEntry, OutboxEntry, OutboxPosition, OutboxRecord, Remembered,
    Reply,
};

/// Outbox records kept before writes are refused: bounds memory while the ledger is away.
pub const OUTBOX_LEN_MAX_DEFAULT: usize = 1_000_000;

/// One account's state. Guarded by its map entry's lock.
#[derive(Debug)]
struct AccountState {
    account: Account,
    wallets: BTreeMap<WalletId, Vec<Grant>>,
    /// Flex and debt, of wallets that have any.
    postpaid: BTreeMap<WalletId, Postpaid>,
    /// Spend limits by id.
    limits: BTreeMap<String, LimitState>,
    /// Open holds and ended ones still remembered, by token.
    holds: HashMap<String, Hold>,
    remembered: HashMap<IdempotencyKey, Remembered>,
    /// Thresholds and auto top-up, of wallets that have any, with what they remember.
    alerts: BTreeMap<WalletId, (WalletAlerts, AlertState)>,
    /// Events made so far; numbers the next one.
    events_made: u64,
    /// Wallets a plan reset refilled since their last event check.
    refilled: BTreeSet<WalletId>,
}

/// A wallet as its alerts judge it: spendable, and its included allowances.
fn level(grants: &[Grant], postpaid: &Postpaid, now_ms: i64) -> Level {
    let mut level = Level {
        available_minor: WalletTotals::of(grants, postpaid, now_ms).available_minor,
        ..Level::default()
    };
    for grant in grants {
        if grant.terms.kind == GrantKind::Included && grant.is_active(now_ms) {
            level.allowance_minor += grant.granted_minor();
            level.allowance_left_minor += grant.spendable_minor();
        }
    }
    level
}

/// What a change of a wallet caused: events, and the thresholds' new state for the ledger if
/// it changed.
struct Judged {
    events: Vec<WalletEvent>,
    armed: Option<OutboxEntry>,
}

/// What an operation changed in a wallet, for [`MemoryStore::announce`].
#[derive(Default)]
struct Change {
    /// The wallet's spendable balance before.
    available_before: i64,
    /// The spend limits' room before, for an operation that counts them.
    limit_rooms: Vec<(String, i64)>,
    /// Whether credit came in (a grant, a higher flex cap), which re-arms thresholds.
    credit_came_in: bool,
}

impl Change {
    fn from(available_before: i64) -> Change {
        Change {
            available_before,
            ..Change::default()
        }
    }
}

impl AccountState {
    fn new(account: Account) -> AccountState {
        AccountState {
            account,
            wallets: BTreeMap::new(),
            postpaid: BTreeMap::new(),
            limits: BTreeMap::new(),
            holds: HashMap::new(),
            remembered: HashMap::new(),
            alerts: BTreeMap::new(),
            events_made: 0,
            refilled: BTreeSet::new(),
        }
    }

    /// The wallet as its alerts judge it.
    fn level(&self, wallet: &WalletId, now_ms: i64) -> Level {
        level(self.grants(wallet), &self.postpaid(wallet), now_ms)
    }

    /// [`AccountState::level`], with recurring grants brought into the current period first.
    fn level_of(&self, wallet: &WalletId, now_ms: i64) -> Level {
        level(&self.rolled(wallet, now_ms), &self.postpaid(wallet), now_ms)
    }

    fn alerts_view(&self, wallet: &WalletId) -> AlertsView {
        match self.alerts.get(wallet) {
            Some((alerts, state)) => AlertsView {
                alerts: alerts.clone(),
                armed: state.armed.clone(),
                open_top_up: state.open_top_up.clone(),
            },
            None => AlertsView::default(),
        }
    }

    /// Each spend limit's room now.
    fn limit_rooms(&self, now_ms: i64) -> Vec<(String, i64)> {
        self.limits
            .iter()
            .map(|(id, limit)| (id.clone(), limit.at(now_ms).room_minor()))
            .collect()
    }

    /// A new event of this account.
    fn event(
        &mut self,
        kind: WalletEventKind,
        wallet: &WalletId,
        now_ms: i64,
        detail: EventDetail,
    ) -> WalletEvent {
        self.events_made += 1;
        WalletEvent {
            id: WalletEvent::id(&self.account.id, now_ms, self.events_made),
            kind,
            account: self.account.id.clone(),
            wallet: wallet.clone(),
            at_ms: now_ms,
            available_minor: self.wallet_available(wallet, now_ms),
            detail,
        }
    }

    /// The events a change of `wallet` caused: zero crossed, spend limits reached, thresholds
    /// crossed, a top-up requested (the rules the scripts' `wallet_events` follows); and for
    /// the ledger, the thresholds' new state if it changed.
    fn wallet_events(&mut self, wallet: &WalletId, change: Change, now_ms: i64) -> Judged {
        let mut events = Vec::new();
        let after = self.wallet_available(wallet, now_ms);
        if let Some(kind) = WalletEvent::crossing(change.available_before, after) {
            events.push(self.event(kind, wallet, now_ms, EventDetail::None));
        }
        for (id, room_before) in change.limit_rooms {
            let reached = self
                .limits
                .get(&id)
                .is_some_and(|limit| limit.at(now_ms).room_minor() <= 0);
            if room_before > 0 && reached {
                let detail = EventDetail::Limit { limit: id };
                events.push(self.event(WalletEventKind::LimitReached, wallet, now_ms, detail));
            }
        }
        let credit_came_in = self.refilled.remove(wallet) || change.credit_came_in;
        let level = self.level(wallet, now_ms);
        let account = self.account.id.to_string();
        let Some((alerts, state)) = self.alerts.get_mut(wallet) else {
            return Judged {
                events,
                armed: None,
            };
        };
        let armed_before = state.armed.clone();
        let fired = state.judge(alerts, &level, credit_came_in, (&account, wallet.as_str()));
        let armed = (state.armed != armed_before).then(|| OutboxEntry::AlertsArmed {
            account: self.account.id.clone(),
            wallet: wallet.clone(),
            armed: state.armed.clone(),
            at_ms: now_ms,
        });
        for fired in fired {
            let (kind, detail) = match fired {
                Fired::Rule(rule @ AlertRule::Below { .. }) => {
                    (WalletEventKind::LowBalance, EventDetail::Rule { rule })
                }
                Fired::Rule(rule @ AlertRule::AllowanceUsed { .. }) => {
                    (WalletEventKind::Alert, EventDetail::Rule { rule })
                }
                Fired::TopUp {
                    request_id,
                    amount_minor,
                } => (
                    WalletEventKind::TopUpRequested,
                    EventDetail::TopUp {
                        request_id,
                        amount_minor,
                    },
                ),
            };
            events.push(self.event(kind, wallet, now_ms, detail));
        }
        Judged { events, armed }
    }

    /// The account with every grant and its open holds, in a fixed order: what a reconcile
    /// compares with the ledger.
    fn balance_snapshot(&self) -> AccountSnapshot {
        let mut holds: Vec<Hold> = self
            .holds
            .values()
            .filter(|h| h.state == HoldState::Held)
            .cloned()
            .collect();
        holds.sort_by(|a, b| a.id.cmp(&b.id));
        AccountSnapshot {
            account: Some(self.account.clone()),
            grants: self.wallets.values().flatten().cloned().collect(),
            postpaid: self
                .postpaid
                .iter()
                .filter(|(_, p)| !p.is_zero())
                .map(|(w, p)| (w.clone(), *p))
                .collect(),
            limits: self.limits.values().cloned().collect(),
            holds,
            remembered: Vec::new(),
            alerts: self
                .alerts
                .iter()
                .map(|(wallet, (alerts, state))| AlertsSnapshot {
                    wallet: wallet.clone(),
                    alerts: alerts.clone(),
                    armed: state.armed.clone(),
                    open_top_up: state.open_top_up.clone(),
                    top_ups: state.top_ups,
                })
                .collect(),
        }
    }

    fn grants(&self, wallet: &WalletId) -> &[Grant] {
        self.wallets.get(wallet).map_or(&[], Vec::as_slice)
    }

    fn postpaid(&self, wallet: &WalletId) -> Postpaid {
        self.postpaid.get(wallet).copied().unwrap_or_default()
    }

    fn available(&self, wallet: &WalletId, feature: &FeatureId, now_ms: i64) -> i64 {
        available_minor(self.grants(wallet), &self.postpaid(wallet), feature, now_ms)
    }

    /// The most a hold or charge with `labels` may take under the spend limits, between
    /// `min_amount_minor` and `amount_minor`, or the denial of the tightest limit.
    fn limit_cap(
        &mut self,
        labels: &Labels,
        amount_minor: i64,
        min_amount_minor: i64,
        now_ms: i64,
    ) -> Result<i64, Denial> {
        for limit in self.limits.values_mut() {
            limit.roll(now_ms);
        }
        limit_cap(self.limits.values(), labels, amount_minor, min_amount_minor)
    }

    /// The limits a hold taken at `held_since_ms` counts against: those it named that were not
    /// set again since.
    fn counted_limits(&self, hold_limits: &[String], held_since_ms: i64) -> Vec<String> {
        hold_limits
            .iter()
            .filter(|id| {
                self.limits
                    .get(*id)
                    .is_some_and(|l| l.since_ms <= held_since_ms)
            })
            .cloned()
            .collect()
    }

    /// Whether the limits a hold counts against have room for `additional_minor` more.
    fn extend_limits(
        &mut self,
        hold_limits: &[String],
        additional_minor: i64,
        now_ms: i64,
    ) -> Result<(), Denial> {
        for limit in self.limits.values_mut() {
            limit.roll(now_ms);
        }
        let tightest = hold_limits
            .iter()
            .filter_map(|id| self.limits.get(id))
            .map(|limit| (limit.room_minor(), limit.limit.id()))
            .min();
        match tightest {
            Some((room, id)) if room < additional_minor => Err(Denial {
                reason: DenyReason::SpendLimitReached,
                available_minor: room,
                limit: Some(id),
            }),
            _ => Ok(()),
        }
    }

    /// Counts a new hold against the limits on its labels; returns their ids.
    fn hold_limits(&mut self, labels: &Labels, amount_minor: i64) -> Vec<String> {
        let mut ids = Vec::new();
        for (id, limit) in &mut self.limits {
            if limit.limit.applies_to(labels) {
                limit.held_minor += amount_minor;
                ids.push(id.clone());
            }
        }
        ids
    }

    /// Settles what a hold taken at `held_since_ms` set aside under its limits (`held_minor`
    /// of it; a limit set again since then never counted it) and counts what it charged
    /// against every limit on its labels now.
    fn settle_limits(
        &mut self,
        hold_limits: &[String],
        labels: &Labels,
        (held_minor, held_since_ms): (i64, i64),
        charged_minor: i64,
        now_ms: i64,
    ) {
        for (id, limit) in &mut self.limits {
            limit.roll(now_ms);
            if hold_limits.contains(id) && limit.since_ms <= held_since_ms {
                limit.held_minor -= held_minor;
            }
            if limit.limit.applies_to(labels) {
                limit.used_minor += charged_minor;
            }
        }
    }

    /// Brings the wallet's recurring grants into the period `now_ms` falls in; returns what
    /// the ledger must be told.
    fn roll(&mut self, wallet: &WalletId, now_ms: i64) -> Vec<OutboxEntry> {
        let Some(grants) = self.wallets.get_mut(wallet) else {
            return Vec::new();
        };
        let account = &self.account.id;
        let entries: Vec<OutboxEntry> = grants
            .iter_mut()
            .filter_map(|grant| {
                let reset = grant.roll(now_ms)?;
                Some(OutboxEntry::reset(account, grant, &reset))
            })
            .collect();
        if !entries.is_empty() {
            self.refilled.insert(wallet.clone());
        }
        entries
    }

    /// The wallet's grants as they are at `now_ms`, recurring ones reset, without changing
    /// the store: what read-only calls judge by.
    fn rolled(&self, wallet: &WalletId, now_ms: i64) -> Vec<Grant> {
        let mut grants = self.grants(wallet).to_vec();
        for grant in &mut grants {
            grant.roll(now_ms);
        }
        grants
    }

    /// The most a wallet could ever hold: its active grants' bounds and its flex cap.
    fn wallet_bound(&self, wallet: &WalletId, now_ms: i64) -> i64 {
        let grants: i64 = self
            .grants(wallet)
            .iter()
            .filter(|g| g.is_active(now_ms))
            .map(Grant::bound_minor)
            .sum();
        grants + self.postpaid(wallet).flex_cap_minor
    }

    /// Spendable balance of a wallet for a feature every grant admits.
    fn wallet_available(&self, wallet: &WalletId, now_ms: i64) -> i64 {
        WalletTotals::of(self.grants(wallet), &self.postpaid(wallet), now_ms).available_minor
    }

    /// Splits `amount_minor` of a wallet for a feature; see [`plan_draw`].
    fn draw(
        &self,
        wallet: &WalletId,
        feature: &FeatureId,
        now_ms: i64,
        amount_minor: i64,
    ) -> Result<Vec<Portion>, Shortfall> {
        plan_draw(
            self.grants(wallet),
            &self.postpaid(wallet),
            feature,
            now_ms,
            amount_minor,
        )
    }

    /// The reply remembered for `idempotency`, if any; a reuse for another request is an error.
    fn recall(&self, idempotency: Option<&Idempotency>) -> Result<Option<&Reply>, StoreError> {
        let Some(idempotency) = idempotency else {
            return Ok(None);
        };
        match self.remembered.get(&idempotency.key) {
            None => Ok(None),
            Some(r) if r.fingerprint == idempotency.fingerprint => Ok(Some(&r.reply)),
            Some(_) => Err(StoreError::IdempotencyConflict {
                key: idempotency.key.clone(),
            }),
        }
    }

    fn remember(&mut self, idempotency: Idempotency, reply: Reply, now_ms: i64) -> Remembered {
        let remembered = Remembered {
            account: self.account.id.clone(),
            key: idempotency.key.clone(),
            fingerprint: idempotency.fingerprint,
            reply,
            at_ms: now_ms,
        };
        self.remembered.insert(idempotency.key, remembered.clone());
        remembered
    }

    /// Adds `sign` times each portion of `split` to what its grant (or flex) holds.
    fn adjust_held(&mut self, wallet: &WalletId, split: &[Portion], sign: i64) {
        let grants = self.wallets.entry(wallet.clone()).or_default();
        for portion in split {
            if !portion.grant.is_grant() {
                let postpaid = self.postpaid.entry(wallet.clone()).or_default();
                debug_assert_eq!(portion.grant, GrantId::flex(), "only flex is held");
                postpaid.flex_held_minor += sign * portion.amount_minor;
                assert!(postpaid.flex_held_minor >= 0, "flex held below zero");
                continue;
            }
            let grant = find_grant(grants, &portion.grant);
            grant.held_minor += sign * portion.amount_minor;
            assert!(
                (0..=grant.remaining_minor).contains(&grant.held_minor),
                "held out of range on grant {}",
                grant.terms.id
            );
        }
    }

    /// Takes `split` out of the grants' remaining amounts, and adds its flex and debt
    /// portions to the wallet's (a charge).
    fn take_remaining(&mut self, wallet: &WalletId, split: &[Portion]) {
        let grants = self.wallets.entry(wallet.clone()).or_default();
        for portion in split {
            if !portion.grant.is_grant() {
                let postpaid = self.postpaid.entry(wallet.clone()).or_default();
                if portion.grant == GrantId::flex() {
                    postpaid.flex_used_minor += portion.amount_minor;
                } else {
                    postpaid.debt_minor += portion.amount_minor;
                }
                continue;
            }
            let grant = find_grant(grants, &portion.grant);
            grant.remaining_minor -= portion.amount_minor;
            assert!(
                grant.remaining_minor >= grant.held_minor,
                "remaining below held on grant {}",
                grant.terms.id
            );
        }
    }

    /// Ends an open hold: gives its split back and records how it ended.
    fn end_hold(&mut self, token: &str, state: HoldState, charged_minor: i64, now_ms: i64) -> Hold {
        let hold = self.holds.get(token).expect("caller checked the hold");
        let (wallet, split) = (hold.wallet.clone(), hold.split.clone());
        let (limits, labels) = (hold.limits.clone(), hold.labels.clone());
        let held = (hold.amount_minor, hold.created_at_ms);
        self.adjust_held(&wallet, &split, -1);
        self.settle_limits(&limits, &labels, held, charged_minor, now_ms);
        let feature = self.holds[token].feature.clone();
        let available = self.available(&wallet, &feature, now_ms);
        let hold = self.holds.get_mut(token).expect("checked above");
        hold.state = hold
            .state
            .transition(state)
            .expect("caller checked the hold is held");
        hold.version += 1;
        if state != HoldState::Committed {
            hold.release = Some(ReleaseRecord {
                released_minor: hold.amount_minor,
                available_minor: available,
                at_ms: now_ms,
            });
        }
        hold.clone()
    }

    /// Voids what a hold gave back to grants voided while it was open: that credit stopped
    /// being spendable with the void, and the ledger must say where it went.
    fn void_released(
        &mut self,
        wallet: &WalletId,
        released: &[Portion],
        hold: &ReservationId,
        now_ms: i64,
    ) -> Vec<OutboxEntry> {
        let account = self.account.id.clone();
        let grants = self.wallets.entry(wallet.clone()).or_default();
        let mut entries = Vec::new();
        for portion in released.iter().filter(|p| p.grant.is_grant()) {
            let grant = find_grant(grants, &portion.grant);
            if grant.voided_at_ms.is_none() || portion.amount_minor == 0 {
                continue;
            }
            grant.remaining_minor -= portion.amount_minor;
            entries.push(OutboxEntry::Void {
                entry: LedgerEntry {
                    id: entry_id::void_released(&account, &portion.grant, hold.token()),
                    kind: EntryKind::Void,
                    account: account.clone(),
                    wallet: wallet.clone(),
                    feature: None,
                    model: None,
                    usage: None,
                    amount_minor: portion.amount_minor,
                    split: vec![portion.clone()],
                    reservation: Some(hold.clone()),
                    grant: Some(portion.grant.clone()),
                    idempotency_key: None,
                    labels: Default::default(),
                    reason: Some("released from a hold on a voided grant".into()),
                    overrun_minor: 0,
                    refund_of: None,
                    at_ms: now_ms,
                },
            });
        }
        entries
    }

    /// Pays what the wallet owes from a new grant, if it may pay for anything: the debt left by
    /// an overrun charged in full is the first thing new credit pays. Returns the ledger entry.
    fn repay_debt(&mut self, grant: &mut Grant, now_ms: i64) -> Option<LedgerEntry> {
        let wallet = grant.terms.wallet.clone();
        let postpaid = self.postpaid.get_mut(&wallet)?;
        let repaid = postpaid.debt_minor.min(grant.remaining_minor);
        if repaid == 0 || !grant.terms.features.is_empty() || !grant.is_active(now_ms) {
            return None;
        }
        postpaid.debt_minor -= repaid;
        grant.remaining_minor -= repaid;
        Some(repayment_entry(&self.account.id, grant, repaid, now_ms))
    }

    /// Ends an open hold without a charge (release or expiry), with the voids that follow.
    fn end_uncharged(&mut self, token: &str, state: HoldState, now_ms: i64) -> Vec<OutboxEntry> {
        let hold = self.end_hold(token, state, 0, now_ms);
        let mut entries = self.void_released(&hold.wallet, &hold.split, &hold.id, now_ms);
        entries.push(OutboxEntry::Hold(hold));
        entries
    }
}

/// The ledger entry of a grant paying `amount_minor` of its wallet's debt.
fn repayment_entry(
    account: &AccountId,
    grant: &Grant,
    amount_minor: i64,
    now_ms: i64,
) -> LedgerEntry {
    LedgerEntry {
        id: entry_id::repay(account, &grant.terms.id),
        kind: EntryKind::Charge,
        account: account.clone(),
        wallet: grant.terms.wallet.clone(),
        feature: None,
        model: None,
        usage: None,
        amount_minor,
        split: vec![Portion {
            grant: grant.terms.id.clone(),
            amount_minor,
        }],
        reservation: None,
        grant: Some(GrantId::debt()),
        idempotency_key: None,
        labels: Default::default(),
        reason: Some("pays the debt left by an overrun charged in full".into()),
        overrun_minor: 0,
        refund_of: None,
        at_ms: now_ms,
    }
}

fn find_grant<'a>(grants: &'a mut [Grant], id: &GrantId) -> &'a mut Grant {
    // A hold's split names grants of its wallet, and grants are never removed while held.
    grants
        .iter_mut()
        .find(|g| &g.terms.id == id)
        .expect("a held grant is in its wallet")
}

fn denial(shortfall: Shortfall) -> Denial {
    match shortfall {
        Shortfall::Insufficient { available_minor } => Denial {
            reason: DenyReason::InsufficientCredits,
            available_minor,
            limit: None,
        },
        Shortfall::FeatureNotAllowed => Denial {
            reason: DenyReason::FeatureNotAllowed,
            available_minor: 0,
            limit: None,
        },
    }
}

/// Something to forget once the retention period has passed.
#[derive(Debug)]
enum Retained {
    Reply(AccountId, IdempotencyKey),
    Hold(ReservationId),
}

#[derive(Debug, Default)]
struct Outbox {
    /// Sequence number of the last record written; 0 before the first.
    last_seq: u64,
    records: VecDeque<OutboxRecord>,
}

/// The balance store in process memory. See the module documentation.
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    accounts: DashMap<AccountId, AccountState>,
    /// Open holds by expiry. May hold stale entries (holds extended or ended since); the
    /// sweeper checks each against the hold itself.
    expiries: Mutex<BTreeSet<(i64, ReservationId)>>,
    /// Replies and ended holds in the order they may be forgotten.
    retained: Mutex<VecDeque<(i64, Retained)>>,
    outbox: Mutex<Outbox>,
    outbox_len_max: usize,
    /// Where crossings of zero are announced, if anyone listens.
    events: Option<Events>,
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore::with_outbox_len_max(clock, OUTBOX_LEN_MAX_DEFAULT)
    }

    pub fn with_outbox_len_max(clock: Arc<dyn Clock>, outbox_len_max: usize) -> MemoryStore {
        MemoryStore {
            clock,
            accounts: DashMap::new(),
            expiries: Mutex::new(BTreeSet::new()),
            retained: Mutex::new(VecDeque::new()),
            outbox: Mutex::new(Outbox::default()),
            outbox_len_max,
            events: None,
        }
    }

    /// Announces every wallet's spendable balance crossing zero on `events`.
    pub fn with_events(self, events: Events) -> MemoryStore {
        MemoryStore {
            events: Some(events),
            ..self
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding this lock is a bug that already failed a request; the queue
        // itself is still consistent (pushes and pops are single calls).
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn last_seq(&self) -> u64 {
        self.outbox().last_seq
    }

    /// Refuses new writes while the outbox is full, so that nothing is acknowledged that the
    /// ledger may never receive.
    fn ensure_outbox_room(&self) -> Result<(), StoreError> {
        if self.outbox().records.len() >= self.outbox_len_max {
            return Err(StoreError::Unavailable(format!(
                "the outbox holds {} records the ledger has not taken yet",
                self.outbox_len_max
            )));
        }
        Ok(())
    }

    /// Appends the entries of one operation as one record; returns its position.
    fn append(&self, at_ms: i64, entries: impl IntoIterator<Item = OutboxEntry>) -> u64 {
        let mut outbox = self.outbox();
        outbox.last_seq += 1;
        let seq = outbox.last_seq;
        outbox.records.push_back(OutboxRecord {
            position: OutboxPosition::Seq(seq),
            at_ms,
            entries: entries.into_iter().collect(),
        });
        seq
    }

    fn watch_expiry(&self, expires_at_ms: i64, id: &ReservationId) {
        self.expiries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((expires_at_ms, id.clone()));
    }

    fn retain(&self, at_ms: i64, what: Retained) {
        self.retained
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((at_ms, what));
    }

    /// Puts a built account in place of whatever the store had for it.
    fn install(&self, built: Built) {
        for (at, id) in &built.expiries {
            self.watch_expiry(*at, id);
        }
        self.retained
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(built.retained);
        self.accounts
            .insert(built.state.account.id.clone(), built.state);
    }

    /// The account, created (with the outbox entry that says so in `entries`) if absent.
    fn account_or_create(
        &self,
        id: &AccountId,
        now_ms: i64,
        entries: &mut Vec<OutboxEntry>,
    ) -> RefMut<'_, AccountId, AccountState> {
        self.accounts.entry(id.clone()).or_insert_with(|| {
            let account = Account {
                id: id.clone(),
                display_name: String::new(),
                status: AccountStatus::Active,
                created_at_ms: now_ms,
            };
            entries.push(OutboxEntry::Account(account.clone()));
            AccountState::new(account)
        })
    }

    fn account_mut(&self, id: &AccountId) -> Option<RefMut<'_, AccountId, AccountState>> {
        self.accounts.get_mut(id)
    }

    /// Resets the wallet's recurring grants that are due, as a record of their own: every call
    /// that spends from or changes a wallet does this first.
    fn roll(&self, state: &mut AccountState, wallet: &WalletId, now_ms: i64) {
        let entries = state.roll(wallet, now_ms);
        if !entries.is_empty() {
            self.append(now_ms, entries);
        }
    }

    /// Tells subscribers what a change of `wallet` caused; returns it for the ledger, to be
    /// written with the change.
    fn announce(
        &self,
        state: &mut AccountState,
        wallet: &WalletId,
        change: Change,
        now_ms: i64,
    ) -> Vec<OutboxEntry> {
        let judged = state.wallet_events(wallet, change, now_ms);
        let mut entries = self.publish(judged.events);
        entries.extend(judged.armed);
        entries
    }

    /// The events of a hold that expired: `HOLD_EXPIRED`, then what giving it back caused.
    fn expired(
        &self,
        state: &mut AccountState,
        id: &ReservationId,
        wallet: &WalletId,
        available_before: i64,
        now_ms: i64,
    ) -> Vec<OutboxEntry> {
        let detail = EventDetail::Hold {
            reservation: id.clone(),
        };
        let mut events = vec![state.event(WalletEventKind::HoldExpired, wallet, now_ms, detail)];
        let judged = state.wallet_events(wallet, Change::from(available_before), now_ms);
        events.extend(judged.events);
        let mut entries = self.publish(events);
        entries.extend(judged.armed);
        entries
    }

    fn publish(&self, events: Vec<WalletEvent>) -> Vec<OutboxEntry> {
        if let Some(subscribers) = &self.events {
            for event in &events {
                subscribers.publish(event.clone());
            }
        }
        events.into_iter().map(OutboxEntry::Event).collect()
    }

    /// The account of a reservation, with the hold checked to exist. Expires the hold first if
    /// its time has passed, so that no call acts on a hold the clock has already ended.
    fn held_account(
        &self,
        id: &ReservationId,
        now_ms: i64,
    ) -> Result<RefMut<'_, AccountId, AccountState>, StoreError> {
        let mut state = self
            .account_mut(id.account())
            .ok_or_else(|| StoreError::ReservationNotFound(id.clone()))?;
        let hold = state
            .holds
            .get(id.token())
            .ok_or_else(|| StoreError::ReservationNotFound(id.clone()))?;
        let wallet = hold.wallet.clone();
        self.roll(&mut state, &wallet, now_ms);
        let hold = &state.holds[id.token()];
        if hold.state == HoldState::Held && hold.expires_at_ms <= now_ms {
            let before = state.wallet_available(&wallet, now_ms);
            let mut entries = state.end_uncharged(id.token(), HoldState::Expired, now_ms);
            self.retain(now_ms, Retained::Hold(id.clone()));
            entries.extend(self.expired(&mut state, id, &wallet, before, now_ms));
            self.append(now_ms, entries);
        }
        Ok(state)
    }
}

/// An account built from a snapshot, with what the store must watch for it.
struct Built {
    state: AccountState,
    /// Open holds by expiry.
    expiries: Vec<(i64, ReservationId)>,
    /// Ended holds and replies, by when they may be forgotten.
    retained: Vec<(i64, Retained)>,
}

/// Builds an account's state from a ledger snapshot, checking that its holds fit its grants.
fn build_account(snapshot: AccountSnapshot, now_ms: i64) -> Result<Option<Built>, StoreError> {
    let Some(account) = snapshot.account else {
        return Ok(None);
    };
    let mut state = AccountState::new(account);
    for mut grant in snapshot.grants {
        grant.held_minor = 0;
        state
            .wallets
            .entry(grant.terms.wallet.clone())
            .or_default()
            .push(grant);
    }
    for grants in state.wallets.values_mut() {
        grants.sort_by_key(|g| (g.created_at_ms, g.terms.id.clone()));
    }
    for limit in snapshot.limits {
        let limit = LimitState {
            held_minor: 0,
            ..limit
        };
        state.limits.insert(limit.limit.id(), limit);
    }
    for (wallet, postpaid) in snapshot.postpaid {
        let postpaid = Postpaid {
            flex_held_minor: 0,
            ..postpaid
        };
        state.postpaid.insert(wallet, postpaid);
    }
    let mut built = Built {
        state,
        expiries: Vec::new(),
        retained: Vec::new(),
    };
    for hold in snapshot.holds {
        if hold.state == HoldState::Held {
            for id in &hold.limits {
                if let Some(limit) = built.state.limits.get_mut(id)
                    && limit.since_ms <= hold.created_at_ms
                {
                    limit.held_minor += hold.amount_minor;
                }
            }
            let grants = built.state.wallets.entry(hold.wallet.clone()).or_default();
            for portion in &hold.split {
                if portion.grant == GrantId::flex() {
                    let postpaid = built.state.postpaid.entry(hold.wallet.clone()).or_default();
                    postpaid.flex_held_minor += portion.amount_minor;
                    continue;
                }
                let grant = grants
                    .iter_mut()
                    .find(|g| g.terms.id == portion.grant)
                    .filter(|g| g.held_minor + portion.amount_minor <= g.remaining_minor)
                    .ok_or_else(|| {
                        StoreError::Inconsistent(format!(
                            "hold {} takes {} from grant {}, which does not have it",
                            hold.id, portion.amount_minor, portion.grant
                        ))
                    })?;
                grant.held_minor += portion.amount_minor;
            }
            built.expiries.push((hold.expires_at_ms, hold.id.clone()));
        } else {
            let ended_at = hold
                .commit
                .as_ref()
                .map(|c| c.at_ms)
                .or(hold.release.as_ref().map(|r| r.at_ms))
                .unwrap_or(hold.created_at_ms);
            built
                .retained
                .push((ended_at, Retained::Hold(hold.id.clone())));
        }
        built.state.holds.insert(hold.id.token().to_owned(), hold);
    }
    for kept in snapshot.alerts {
        let armed = if kept.armed.len() == kept.alerts.rules.len() {
            kept.armed
        } else {
            // Not known: a threshold the wallet is already past waits to be re-armed.
            let level = built.state.level_of(&kept.wallet, now_ms);
            AlertState::armed_at(&kept.alerts, &level, None).armed
        };
        let state = AlertState {
            armed,
            open_top_up: kept.open_top_up,
            top_ups: kept.top_ups,
        };
        built.state.alerts.insert(kept.wallet, (kept.alerts, state));
    }
    for remembered in snapshot.remembered {
        built.retained.push((
            remembered.at_ms,
            Retained::Reply(remembered.account.clone(), remembered.key.clone()),
        ));
        built
            .state
            .remembered
            .insert(remembered.key.clone(), remembered);
    }
    Ok(Some(built))
}

fn ended(hold: &Hold) -> StoreError {
    StoreError::ReservationEnded {
        id: hold.id.clone(),
        state: hold.state,
    }
}

#[async_trait]
impl Spending for MemoryStore {
    async fn now_ms(&self) -> Result<i64, StoreError> {
        Ok(self.clock.now_ms())
    }

    async fn reserve(
        &self,
        op: ReserveOp,
    ) -> Result<Written<Decision<ReserveReceipt>>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let Some(mut state) = self.account_mut(op.id.account()) else {
            return Ok(Written {
                value: Decision::Denied(Denial {
                    reason: DenyReason::AccountNotFound,
                    available_minor: 0,
                    limit: None,
                }),
                durable: Durable::UpTo(self.last_seq()),
            });
        };
        if let Some(Reply::Reserve(receipt)) = state.recall(op.idempotency.as_ref())? {
            return Ok(Written {
                value: Decision::Allowed(receipt.clone()),
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        self.roll(&mut state, &op.wallet, now);
        let announced = op.wallet.clone();
        let before = state.wallet_available(&announced, now);
        let limit_rooms = state.limit_rooms(now);
        let available = state.available(&op.wallet, &op.feature, now);
        if state.account.status == AccountStatus::Suspended {
            return Ok(Written {
                value: Decision::Denied(Denial {
                    reason: DenyReason::AccountSuspended,
                    available_minor: available,
                    limit: None,
                }),
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        let capped = state.limit_cap(&op.labels, op.amount_minor, op.min_amount_minor, now);
        let op = match capped {
            Ok(amount_minor) => ReserveOp {
                amount_minor,
                min_amount_minor: op.min_amount_minor.min(amount_minor),
                ..op
            },
            Err(denial) => {
                return Ok(Written {
                    value: Decision::Denied(denial),
                    durable: Durable::UpTo(self.last_seq()),
                });
            }
        };
        let drawn = match state.draw(&op.wallet, &op.feature, now, op.amount_minor) {
            // A partial hold takes what is left, down to its minimum.
            Err(Shortfall::Insufficient { available_minor })
                if available_minor > 0 && available_minor >= op.min_amount_minor =>
            {
                state
                    .draw(&op.wallet, &op.feature, now, available_minor)
                    .map(|split| (split, available_minor))
            }
            drawn => drawn.map(|split| (split, op.amount_minor)),
        };
        let (split, amount_minor) = match drawn {
            Ok(drawn) => drawn,
            Err(shortfall) => {
                return Ok(Written {
                    value: Decision::Denied(denial(shortfall)),
                    durable: Durable::UpTo(self.last_seq()),
                });
            }
        };
        let op = ReserveOp { amount_minor, ..op };
        state.adjust_held(&op.wallet, &split, 1);
        let limits = state.hold_limits(&op.labels, op.amount_minor);
        let hold = Hold {
            id: op.id.clone(),
            wallet: op.wallet.clone(),
            feature: op.feature,
            amount_minor: op.amount_minor,
            split: split.clone(),
            created_at_ms: now,
            expires_at_ms: now + op.ttl_ms,
            state: HoldState::Held,
            labels: op.labels,
            limits,
            price: op.price,
            overrun: op.overrun,
            stop: op.stop,
            model: op.model,
            idempotency_key: op.idempotency.as_ref().map(|i| i.key.clone()),
            commit: None,
            release: None,
            version: 1,
        };
        state.holds.insert(op.id.token().to_owned(), hold.clone());
        let receipt = ReserveReceipt {
            id: op.id.clone(),
            wallet: op.wallet,
            amount_minor: op.amount_minor,
            expires_at_ms: hold.expires_at_ms,
            split,
            available_minor: available - op.amount_minor,
        };
        self.watch_expiry(hold.expires_at_ms, &op.id);
        let mut entries = vec![OutboxEntry::Hold(hold)];
        if let Some(idempotency) = op.idempotency {
            let account = state.account.id.clone();
            self.retain(now, Retained::Reply(account, idempotency.key.clone()));
            let remembered = state.remember(idempotency, Reply::Reserve(receipt.clone()), now);
            entries.push(OutboxEntry::Remember(remembered));
        }
        entries.extend(self.announce(
            &mut state,
            &announced,
            Change {
                available_before: before,
                limit_rooms,
                credit_came_in: false,
            },
            now,
        ));
        Ok(Written {
            value: Decision::Allowed(receipt),
            durable: Durable::UpTo(self.append(now, entries)),
        })
    }

    async fn commit(&self, op: CommitOp) -> Result<Written<CommitReceipt>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let mut state = self.held_account(&op.id, now)?;
        let announced = state.holds[op.id.token()].wallet.clone();
        let before = state.wallet_available(&announced, now);
        let hold = &state.holds[op.id.token()];
        match (hold.state, &hold.commit) {
            (HoldState::Held, _) => {}
            (HoldState::Committed, Some(record)) if record.requested_minor == op.amount_minor => {
                return Ok(Written {
                    value: commit_receipt(&op.id, record),
                    durable: Durable::UpTo(self.last_seq()),
                });
            }
            (HoldState::Committed, Some(record)) => {
                return Err(StoreError::CommitMismatch {
                    id: op.id.clone(),
                    committed_minor: record.requested_minor,
                    requested_minor: op.amount_minor,
                });
            }
            _ => return Err(ended(hold)),
        }
        let over_minor = (op.amount_minor - hold.amount_minor).max(0);
        let (mut charged, released) = settle(&hold.split, op.amount_minor);
        let (wallet, feature) = (hold.wallet.clone(), hold.feature.clone());
        if over_minor > 0 {
            // Judged on the wallet without this hold: its own credit is charged in full first.
            let mut without = state.grants(&wallet).to_vec();
            let mut postpaid = state.postpaid(&wallet);
            for portion in &charged {
                if portion.grant == GrantId::flex() {
                    postpaid.flex_held_minor -= portion.amount_minor;
                    postpaid.flex_used_minor += portion.amount_minor;
                } else {
                    let grant = find_grant(&mut without, &portion.grant);
                    grant.held_minor -= portion.amount_minor;
                    grant.remaining_minor -= portion.amount_minor;
                }
            }
            let policy = hold.overrun;
            let overrun = plan_overrun(&without, &postpaid, &feature, now, over_minor, policy);
            if postpaid.debt_minor + overrun.debt_minor > MINOR_MAX {
                return Err(StoreError::BalanceTooLarge { wallet });
            }
            merge_split(&mut charged, overrun.into_split());
        }
        let charged_minor: i64 = charged.iter().map(|p| p.amount_minor).sum();
        state.end_hold(op.id.token(), HoldState::Committed, charged_minor, now);
        state.take_remaining(&wallet, &charged);
        let voids = state.void_released(&wallet, &released, &op.id, now);
        let hold = &state.holds[op.id.token()];
        let record = CommitRecord {
            entry_id: op.entry_id.clone(),
            requested_minor: op.amount_minor,
            overrun_minor: over_minor,
            charged_minor,
            released_minor: hold.amount_minor - op.amount_minor.min(hold.amount_minor),
            split: charged.clone(),
            available_minor: state.available(&wallet, &feature, now),
            at_ms: now,
        };
        let entry = LedgerEntry {
            id: op.entry_id,
            kind: EntryKind::Commit,
            account: op.id.account().clone(),
            wallet,
            feature: Some(feature),
            model: op
                .usage
                .as_ref()
                .and_then(|u| u.model.clone())
                .or_else(|| hold.model.clone()),
            usage: op.usage,
            amount_minor: charged_minor,
            split: charged,
            reservation: Some(op.id.clone()),
            grant: None,
            idempotency_key: hold.idempotency_key.clone(),
            labels: hold.labels.clone(),
            reason: None,
            overrun_minor: over_minor,
            refund_of: None,
            at_ms: now,
        };
        let hold = state.holds.get_mut(op.id.token()).expect("checked above");
        hold.commit = Some(record.clone());
        let hold = hold.clone();
        self.retain(now, Retained::Hold(op.id.clone()));
        let mut entries = vec![OutboxEntry::Charge(entry)];
        entries.extend(voids);
        entries.push(OutboxEntry::Hold(hold));
        entries.extend(self.announce(&mut state, &announced, Change::from(before), now));
        let seq = self.append(now, entries);
        Ok(Written {
            value: commit_receipt(&op.id, &record),
            durable: Durable::UpTo(seq),
        })
    }

    async fn release(&self, id: &ReservationId) -> Result<Written<ReleaseReceipt>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let mut state = self.held_account(id, now)?;
        let announced = state.holds[id.token()].wallet.clone();
        let before = state.wallet_available(&announced, now);
        let hold = &state.holds[id.token()];
        match (hold.state, &hold.release) {
            (HoldState::Held, _) => {}
            (HoldState::Released, Some(record)) => {
                return Ok(Written {
                    value: ReleaseReceipt {
                        id: id.clone(),
                        released_minor: record.released_minor,
                        available_minor: record.available_minor,
                    },
                    durable: Durable::UpTo(self.last_seq()),
                });
            }
            _ => return Err(ended(hold)),
        }
        let mut entries = state.end_uncharged(id.token(), HoldState::Released, now);
        let record = state.holds[id.token()]
            .release
            .clone()
            .expect("end_hold records a release");
        self.retain(now, Retained::Hold(id.clone()));
        entries.extend(self.announce(&mut state, &announced, Change::from(before), now));
        let seq = self.append(now, entries);
        Ok(Written {
            value: ReleaseReceipt {
                id: id.clone(),
                released_minor: record.released_minor,
                available_minor: record.available_minor,
            },
            durable: Durable::UpTo(seq),
        })
    }

    async fn extend(&self, op: ExtendOp) -> Result<Written<Decision<ExtendReceipt>>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let mut state = self.held_account(&op.id, now)?;
        let announced = state.holds[op.id.token()].wallet.clone();
        let before = state.wallet_available(&announced, now);
        let limit_rooms = state.limit_rooms(now);
        if let Some(Reply::Extend(receipt)) = state.recall(op.idempotency.as_ref())? {
            return Ok(Written {
                value: Decision::Allowed(receipt.clone()),
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        let hold = &state.holds[op.id.token()];
        if hold.state != HoldState::Held {
            return Err(ended(hold));
        }
        let (wallet, feature, stop) = (hold.wallet.clone(), hold.feature.clone(), hold.stop);
        let available = state.available(&wallet, &feature, now);
        let refused = if state.account.status == AccountStatus::Suspended {
            Some(DenyReason::AccountSuspended)
        } else if stop == StopRule::StopRunning && available <= 0 {
            // The feature's work stops when its wallet runs out, however much is still held.
            Some(DenyReason::InsufficientCredits)
        } else {
            None
        };
        if let Some(reason) = refused {
            return Ok(Written {
                value: Decision::Denied(Denial {
                    reason,
                    available_minor: available,
                    limit: None,
                }),
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        let hold_limits = state.counted_limits(&hold.limits, hold.created_at_ms);
        if let Err(denial) = state.extend_limits(&hold_limits, op.additional_minor, now) {
            return Ok(Written {
                value: Decision::Denied(denial),
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        let extra = match state.draw(&wallet, &feature, now, op.additional_minor) {
            Ok(extra) => extra,
            Err(shortfall) => {
                return Ok(Written {
                    value: Decision::Denied(denial(shortfall)),
                    durable: Durable::UpTo(self.last_seq()),
                });
            }
        };
        state.adjust_held(&wallet, &extra, 1);
        for id in &hold_limits {
            if let Some(limit) = state.limits.get_mut(id) {
                limit.held_minor += op.additional_minor;
            }
        }
        let hold = state.holds.get_mut(op.id.token()).expect("checked above");
        hold.amount_minor += op.additional_minor;
        hold.version += 1;
        merge_split(&mut hold.split, extra);
        let expiry_moved = match op.ttl_ms {
            Some(ttl_ms) if now + ttl_ms > hold.expires_at_ms => {
                hold.expires_at_ms = now + ttl_ms;
                true
            }
            _ => false,
        };
        let hold = hold.clone();
        if expiry_moved {
            self.watch_expiry(hold.expires_at_ms, &op.id);
        }
        let receipt = ExtendReceipt {
            id: op.id.clone(),
            amount_minor: hold.amount_minor,
            expires_at_ms: hold.expires_at_ms,
            split: hold.split.clone(),
            available_minor: available - op.additional_minor,
        };
        let mut entries = vec![OutboxEntry::Hold(hold)];
        if let Some(idempotency) = op.idempotency {
            let account = op.id.account().clone();
            self.retain(now, Retained::Reply(account, idempotency.key.clone()));
            let remembered = state.remember(idempotency, Reply::Extend(receipt.clone()), now);
            entries.push(OutboxEntry::Remember(remembered));
        }
        entries.extend(self.announce(
            &mut state,
            &announced,
            Change {
                available_before: before,
                limit_rooms,
                credit_came_in: false,
            },
            now,
        ));
        Ok(Written {
            value: Decision::Allowed(receipt),
            durable: Durable::UpTo(self.append(now, entries)),
        })
    }

    async fn charge(&self, op: ChargeOp) -> Result<Written<Decision<ChargeReceipt>>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let denied = |reason, available_minor| {
            Ok(Written {
                value: Decision::Denied(Denial {
                    reason,
                    available_minor,
                    limit: None,
                }),
                durable: Durable::UpTo(self.last_seq()),
            })
        };
        let Some(mut state) = self.account_mut(&op.account) else {
            return denied(DenyReason::AccountNotFound, 0);
        };
        if let Some(Reply::Charge(receipt)) = state.recall(op.idempotency.as_ref())? {
            return Ok(Written {
                value: Decision::Allowed(receipt.clone()),
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        self.roll(&mut state, &op.wallet, now);
        let announced = op.wallet.clone();
        let before = state.wallet_available(&announced, now);
        let limit_rooms = state.limit_rooms(now);
        let available = state.available(&op.wallet, &op.feature, now);
        if state.account.status == AccountStatus::Suspended {
            return denied(DenyReason::AccountSuspended, available);
        }
        if let Err(denial) = state.limit_cap(&op.labels, op.amount_minor, op.amount_minor, now) {
            return Ok(Written {
                value: Decision::Denied(denial),
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        let split = match state.draw(&op.wallet, &op.feature, now, op.amount_minor) {
            Ok(split) => split,
            Err(shortfall) => {
                let Denial {
                    reason,
                    available_minor,
                    ..
                } = denial(shortfall);
                return denied(reason, available_minor);
            }
        };
        state.take_remaining(&op.wallet, &split);
        state.settle_limits(&[], &op.labels, (0, now), op.amount_minor, now);
        let receipt = ChargeReceipt {
            entry_id: op.entry_id.clone(),
            wallet: op.wallet.clone(),
            charged_minor: op.amount_minor,
            split: split.clone(),
            available_minor: available - op.amount_minor,
        };
        let entry = LedgerEntry {
            id: op.entry_id,
            kind: EntryKind::Charge,
            account: op.account.clone(),
            wallet: op.wallet,
            feature: Some(op.feature),
            model: op.usage.as_ref().and_then(|u| u.model.clone()),
            usage: op.usage,
            amount_minor: op.amount_minor,
            split,
            reservation: None,
            grant: None,
            idempotency_key: op.idempotency.as_ref().map(|i| i.key.clone()),
            labels: op.labels,
            reason: None,
            overrun_minor: 0,
            refund_of: None,
            at_ms: now,
        };
        let mut entries = vec![OutboxEntry::Charge(entry)];
        if let Some(idempotency) = op.idempotency {
            self.retain(now, Retained::Reply(op.account, idempotency.key.clone()));
            let remembered = state.remember(idempotency, Reply::Charge(receipt.clone()), now);
            entries.push(OutboxEntry::Remember(remembered));
        }
        entries.extend(self.announce(
            &mut state,
            &announced,
            Change {
                available_before: before,
                limit_rooms,
                credit_came_in: false,
            },
            now,
        ));
        Ok(Written {
            value: Decision::Allowed(receipt),
            durable: Durable::UpTo(self.append(now, entries)),
        })
    }

    async fn check(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        feature: &FeatureId,
        amount_minor: i64,
        labels: &Labels,
    ) -> Result<Decision<CheckReceipt>, StoreError> {
        let now = self.clock.now_ms();
        let Some(state) = self.accounts.get(account) else {
            return Ok(Decision::Denied(Denial {
                reason: DenyReason::AccountNotFound,
                available_minor: 0,
                limit: None,
            }));
        };
        let grants = state.rolled(wallet, now);
        let postpaid = state.postpaid(wallet);
        let available = available_minor(&grants, &postpaid, feature, now);
        if state.account.status == AccountStatus::Suspended {
            return Ok(Decision::Denied(Denial {
                reason: DenyReason::AccountSuspended,
                available_minor: available,
                limit: None,
            }));
        }
        let limits: Vec<LimitState> = state.limits.values().map(|l| l.at(now)).collect();
        if let Err(denial) = limit_cap(&limits, labels, amount_minor, amount_minor) {
            return Ok(Decision::Denied(denial));
        }
        Ok(
            match plan_draw(&grants, &postpaid, feature, now, amount_minor) {
                Ok(_) => Decision::Allowed(CheckReceipt {
                    available_minor: available,
                }),
                Err(shortfall) => Decision::Denied(denial(shortfall)),
            },
        )
    }

    async fn hold(&self, id: &ReservationId) -> Result<Option<Hold>, StoreError> {
        Ok(self
            .accounts
            .get(id.account())
            .and_then(|state| state.holds.get(id.token()).cloned()))
    }

    async fn balance(&self, account: &AccountId) -> Result<Option<AccountView>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self.accounts.get(account).map(|state| {
            let mut names: BTreeSet<&WalletId> = state.wallets.keys().collect();
            names.extend(state.postpaid.keys());
            names.extend(state.alerts.keys());
            let default = WalletId::default_wallet();
            names.insert(&default);
            let wallets = names
                .into_iter()
                .map(|wallet| WalletView {
                    wallet: wallet.clone(),
                    grants: state
                        .rolled(wallet, now)
                        .into_iter()
                        .filter(|g| g.is_active(now) || g.held_minor > 0)
                        .collect(),
                    postpaid: state.postpaid(wallet),
                    alerts: state
                        .alerts
                        .contains_key(wallet)
                        .then(|| state.alerts_view(wallet)),
                })
                .collect();
            AccountView {
                account: state.account.clone(),
                wallets,
                limits: state.limits.values().map(|l| l.at(now)).collect(),
                now_ms: now,
            }
        }))
    }
}

fn commit_receipt(id: &ReservationId, record: &CommitRecord) -> CommitReceipt {
    CommitReceipt {
        id: id.clone(),
        entry_id: record.entry_id.clone(),
        requested_minor: record.requested_minor,
        overrun_minor: record.overrun_minor,
        charged_minor: record.charged_minor,
        released_minor: record.released_minor,
        split: record.split.clone(),
        available_minor: record.available_minor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::GrantKind;
    use crate::sync::{SyncSettings, sweep_round};

    fn id<T: TryFrom<String>>(text: &str) -> T
    where
        T::Error: std::fmt::Debug,
    {
        T::try_from(text.to_owned()).unwrap()
    }

    async fn store_with_grant(amount_minor: i64) -> (MemoryStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = MemoryStore::new(clock.clone());
        let terms = GrantTerms {
            id: id("g1"),
            wallet: WalletId::default_wallet(),
            kind: GrantKind::Prepaid,
            priority: 30,
            amount_minor,
            expires_at_ms: None,
            features: vec![],
            recurrence: None,
        };
        store
            .add_grant(&id("acme"), terms, String::from("grant/acme/g1").into())
            .await
            .unwrap();
        (store, clock)
    }

    fn reserve(amount_minor: i64, ttl_ms: i64) -> ReserveOp {
        ReserveOp {
            id: ReservationId::generate(&id("acme")),
            wallet: WalletId::default_wallet(),
            feature: id("chat"),
            amount_minor,
            min_amount_minor: amount_minor,
            ttl_ms,
            labels: Default::default(),
            price: None,
            overrun: Default::default(),
            stop: Default::default(),
            model: None,
            idempotency: None,
        }
    }

    fn settings() -> SyncSettings {
        SyncSettings {
            batch_len_max: 1_024,
            interval_ms: 10,
            sweep_interval_ms: 10,
            sweep_batch_len_max: 100,
            retention_ms: 86_400_000,
            retry_backoff_ms: 10,
            ledger_timeout_ms: 1_000,
            inbound_interval_ms: 10,
        }
    }

    async fn available(store: &MemoryStore) -> i64 {
        let view = store.balance(&id("acme")).await.unwrap().unwrap();
        let wallet = &view.wallets[0];
        crate::domain::grant::WalletTotals::of(&wallet.grants, &wallet.postpaid, view.now_ms)
            .available_minor
    }

    #[tokio::test]
    async fn one_sweep_round_releases_due_holds_behind_many_stale_candidates() {
        let (store, clock) = store_with_grant(1_000_000).await;
        for _ in 0..1_000 {
            let op = reserve(1, 1_000);
            let id = op.id.clone();
            store.reserve(op).await.unwrap();
            store.release(&id).await.unwrap();
        }
        store.reserve(reserve(5, 1_000)).await.unwrap();
        assert_eq!(available(&store).await, 1_000_000 - 5);
        clock.advance_ms(1_000);
        sweep_round(&store, &settings()).await;
        assert_eq!(available(&store).await, 1_000_000);
    }

    #[tokio::test]
    async fn holds_are_not_expired_before_their_time() {
        let (store, clock) = store_with_grant(100).await;
        store.reserve(reserve(40, 1_000)).await.unwrap();
        clock.advance_ms(999);
        sweep_round(&store, &settings()).await;
        assert_eq!(available(&store).await, 60);
        clock.advance_ms(1);
        sweep_round(&store, &settings()).await;
        assert_eq!(available(&store).await, 100);
    }

    #[tokio::test]
    async fn each_operation_is_one_outbox_record() {
        let (store, _clock) = store_with_grant(100).await;
        let op = reserve(40, 1_000);
        let hold = op.id.clone();
        store.reserve(op).await.unwrap();
        let commit = CommitOp {
            id: hold,
            amount_minor: 30,
            entry_id: "commit/x".into(),
            usage: None,
        };
        let written = store.commit(commit).await.unwrap();
        let records = store.outbox_read(100).await.unwrap();
        let last = records.last().unwrap();
        assert_eq!(Durable::UpTo(last.position.seq().unwrap()), written.durable);
        assert!(
            matches!(
                last.entries.as_slice(),
                [OutboxEntry::Charge(_), OutboxEntry::Hold(_)]
            ),
            "the charge and the hold's new state travel together"
        );
    }

    #[tokio::test]
    async fn credit_released_from_a_voided_grant_is_voided_in_the_ledger_too() {
        let (store, _clock) = store_with_grant(100).await;
        let op = reserve(40, 1_000);
        let hold = op.id.clone();
        store.reserve(op).await.unwrap();
        let void = store
            .void_grant(
                &id("acme"),
                &id("g1"),
                "refund".into(),
                "void/acme/g1".into(),
            )
            .await
            .unwrap();
        assert_eq!(void.value.voided_minor, 60);
        let commit = CommitOp {
            id: hold,
            amount_minor: 15,
            entry_id: "commit/x".into(),
            usage: None,
        };
        store.commit(commit).await.unwrap();
        let records = store.outbox_read(100).await.unwrap();
        let voids: Vec<i64> = records
            .iter()
            .flat_map(|r| &r.entries)
            .filter_map(|e| match e {
                OutboxEntry::Void { entry } => Some(entry.amount_minor),
                _ => None,
            })
            .collect();
        assert_eq!(voids, [60, 25], "granted 100 = charged 15 + voided 60 + 25");
        let view = store.balance(&id("acme")).await.unwrap().unwrap();
        assert!(
            view.wallets[0].grants.is_empty(),
            "nothing left on the grant"
        );
    }
}

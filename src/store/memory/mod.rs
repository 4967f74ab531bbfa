//! `MemoryStore`: the balance store in this process, for the embedded single-node default and as
//! the reference the Redis store is tested against.
//!
//! Each account lives in one map entry; an operation takes that entry's lock, does all of its
//! checks, then all of its writes and its outbox entries, and lets go: atomic per account, as a
//! Lua script is in Redis. Memory is not durable, so on the embedded default the sync loop makes
//! every acknowledged write durable in the ledger first (see [`crate::sync`]).

mod account;
mod admin;
mod charge;
mod check;
mod commit;
mod expire;
mod extend;
mod outbox;
mod rebuild;
mod release;
mod reserve;
#[cfg(test)]
mod tests;

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
use crate::domain::alert::{AlertState, Level, WalletAlerts};
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

use self::account::*;

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

    /// A denial: it changes nothing, so it is durable once what came before it is.
    fn denied<T>(&self, denial: Denial) -> Written<Decision<T>> {
        Written {
            value: Decision::Denied(denial),
            durable: Durable::UpTo(self.last_seq()),
        }
    }

    /// An idempotent repeat: the first answer again, durable once what came before it is.
    fn replayed<T: Clone>(&self, receipt: &T) -> Written<Decision<T>> {
        Written {
            value: Decision::Allowed(receipt.clone()),
            durable: Durable::UpTo(self.last_seq()),
        }
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

    /// Ends an operation that changed an account: remembers its reply under its idempotency
    /// key, if it has one, adds what the change caused in `wallet`, and writes it all as one
    /// outbox record. Returns where that record is.
    fn allowed(
        &self,
        state: &mut AccountState,
        mut entries: Vec<OutboxEntry>,
        reply: Option<(Idempotency, Reply)>,
        wallet: &WalletId,
        change: Change,
        now_ms: i64,
    ) -> Durable {
        if let Some((idempotency, reply)) = reply {
            let account = state.account.id.clone();
            self.retain(now_ms, Retained::Reply(account, idempotency.key.clone()));
            entries.push(OutboxEntry::Remember(state.remember(
                idempotency,
                reply,
                now_ms,
            )));
        }
        entries.extend(self.announce(state, wallet, change, now_ms));
        Durable::UpTo(self.append(now_ms, entries))
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
/// Long for a reason: each part of the snapshot (grants, postpaid, limits, holds, replies,
/// alerts) is put in place in turn, as `lua/hydrate.lua` does.
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
        reserve::apply(self, op)
    }

    async fn commit(&self, op: CommitOp) -> Result<Written<CommitReceipt>, StoreError> {
        commit::apply(self, op)
    }

    async fn release(&self, id: &ReservationId) -> Result<Written<ReleaseReceipt>, StoreError> {
        release::apply(self, id)
    }

    async fn extend(&self, op: ExtendOp) -> Result<Written<Decision<ExtendReceipt>>, StoreError> {
        extend::apply(self, op)
    }

    async fn charge(&self, op: ChargeOp) -> Result<Written<Decision<ChargeReceipt>>, StoreError> {
        charge::apply(self, op)
    }

    async fn check(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        feature: &FeatureId,
        amount_minor: i64,
        labels: &Labels,
    ) -> Result<Decision<CheckReceipt>, StoreError> {
        check::apply(self, account, wallet, feature, amount_minor, labels)
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

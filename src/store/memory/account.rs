//! One account's state in the in-process store and the rules that change it: what a wallet
//! has, holds and limits, what an operation draws and gives back, and the events a change
//! causes.

// The in-process store's imports are its parent's.
use super::*;

/// One account's state. Guarded by its map entry's lock.
#[derive(Debug)]
pub(super) struct AccountState {
    pub(super) account: Account,
    pub(super) wallets: BTreeMap<WalletId, Vec<Grant>>,
    /// Flex and debt, of wallets that have any.
    pub(super) postpaid: BTreeMap<WalletId, Postpaid>,
    /// Spend limits by id.
    pub(super) limits: BTreeMap<String, LimitState>,
    /// Open holds and ended ones still remembered, by token.
    pub(super) holds: HashMap<String, Hold>,
    pub(super) remembered: HashMap<IdempotencyKey, Remembered>,
    /// Thresholds and auto top-up, of wallets that have any, with what they remember.
    pub(super) alerts: BTreeMap<WalletId, (WalletAlerts, AlertState)>,
    /// Events made so far; numbers the next one.
    pub(super) events_made: u64,
    /// Wallets a plan reset refilled since their last event check.
    pub(super) refilled: BTreeSet<WalletId>,
}

/// A wallet as its alerts judge it: spendable, and its included allowances.
pub(super) fn level(grants: &[Grant], postpaid: &Postpaid, now_ms: i64) -> Level {
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
pub(super) struct Judged {
    pub(super) events: Vec<WalletEvent>,
    pub(super) armed: Option<OutboxEntry>,
}

/// What an operation changed in a wallet, for [`MemoryStore::announce`].
#[derive(Default)]
pub(super) struct Change {
    /// The wallet's spendable balance before.
    pub(super) available_before: i64,
    /// The spend limits' room before, for an operation that counts them.
    pub(super) limit_rooms: Vec<(String, i64)>,
    /// Whether credit came in (a grant, a higher flex cap), which re-arms thresholds.
    pub(super) credit_came_in: bool,
}

impl Change {
    pub(super) fn from(available_before: i64) -> Change {
        Change {
            available_before,
            ..Change::default()
        }
    }
}

impl AccountState {
    pub(super) fn new(account: Account) -> AccountState {
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
    pub(super) fn level(&self, wallet: &WalletId, now_ms: i64) -> Level {
        level(self.grants(wallet), &self.postpaid(wallet), now_ms)
    }

    /// [`AccountState::level`], with recurring grants brought into the current period first.
    pub(super) fn level_of(&self, wallet: &WalletId, now_ms: i64) -> Level {
        level(&self.rolled(wallet, now_ms), &self.postpaid(wallet), now_ms)
    }

    pub(super) fn alerts_view(&self, wallet: &WalletId) -> AlertsView {
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
    pub(super) fn limit_rooms(&self, now_ms: i64) -> Vec<(String, i64)> {
        self.limits
            .iter()
            .map(|(id, limit)| (id.clone(), limit.at(now_ms).room_minor()))
            .collect()
    }

    /// A new event of this account.
    pub(super) fn event(
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
    pub(super) fn wallet_events(
        &mut self,
        wallet: &WalletId,
        change: Change,
        now_ms: i64,
    ) -> Judged {
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
            let (kind, detail) = fired.event();
            events.push(self.event(kind, wallet, now_ms, detail));
        }
        Judged { events, armed }
    }

    /// The account with every grant and its open holds, in a fixed order: what a reconcile
    /// compares with the ledger.
    pub(super) fn balance_snapshot(&self) -> AccountSnapshot {
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

    pub(super) fn grants(&self, wallet: &WalletId) -> &[Grant] {
        self.wallets.get(wallet).map_or(&[], Vec::as_slice)
    }

    pub(super) fn postpaid(&self, wallet: &WalletId) -> Postpaid {
        self.postpaid.get(wallet).copied().unwrap_or_default()
    }

    pub(super) fn available(&self, wallet: &WalletId, feature: &FeatureId, now_ms: i64) -> i64 {
        available_minor(self.grants(wallet), &self.postpaid(wallet), feature, now_ms)
    }

    /// The most a hold or charge with `labels` may take under the spend limits, between
    /// `min_amount_minor` and `amount_minor`, or the denial of the tightest limit.
    pub(super) fn limit_cap(
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
    pub(super) fn counted_limits(&self, hold_limits: &[String], held_since_ms: i64) -> Vec<String> {
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
    pub(super) fn extend_limits(
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
    pub(super) fn hold_limits(&mut self, labels: &Labels, amount_minor: i64) -> Vec<String> {
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
    pub(super) fn settle_limits(
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
    pub(super) fn roll(&mut self, wallet: &WalletId, now_ms: i64) -> Vec<OutboxEntry> {
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
    pub(super) fn rolled(&self, wallet: &WalletId, now_ms: i64) -> Vec<Grant> {
        let mut grants = self.grants(wallet).to_vec();
        for grant in &mut grants {
            grant.roll(now_ms);
        }
        grants
    }

    /// The most a wallet could ever hold: its active grants' bounds and its flex cap.
    pub(super) fn wallet_bound(&self, wallet: &WalletId, now_ms: i64) -> i64 {
        let grants: i64 = self
            .grants(wallet)
            .iter()
            .filter(|g| g.is_active(now_ms))
            .map(Grant::bound_minor)
            .sum();
        grants + self.postpaid(wallet).flex_cap_minor
    }

    /// Spendable balance of a wallet for a feature every grant admits.
    pub(super) fn wallet_available(&self, wallet: &WalletId, now_ms: i64) -> i64 {
        WalletTotals::of(self.grants(wallet), &self.postpaid(wallet), now_ms).available_minor
    }

    /// Splits `amount_minor` of a wallet for a feature; see [`plan_draw`].
    pub(super) fn draw(
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
    pub(super) fn recall(
        &self,
        idempotency: Option<&Idempotency>,
    ) -> Result<Option<&Reply>, StoreError> {
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

    pub(super) fn remember(
        &mut self,
        idempotency: Idempotency,
        reply: Reply,
        now_ms: i64,
    ) -> Remembered {
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
    pub(super) fn adjust_held(&mut self, wallet: &WalletId, split: &[Portion], sign: i64) {
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
    pub(super) fn take_remaining(&mut self, wallet: &WalletId, split: &[Portion]) {
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
    pub(super) fn end_hold(
        &mut self,
        token: &str,
        state: HoldState,
        charged_minor: i64,
        now_ms: i64,
    ) -> Hold {
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
    pub(super) fn void_released(
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
            if !find_grant(grants, &portion.grant).lapse_released(portion.amount_minor) {
                continue;
            }
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
    pub(super) fn repay_debt(&mut self, grant: &mut Grant, now_ms: i64) -> Option<LedgerEntry> {
        let postpaid = self.postpaid.get_mut(&grant.terms.wallet)?;
        let repaid = postpaid.repay_from(grant, now_ms);
        (repaid > 0).then(|| repayment_entry(&self.account.id, grant, repaid, now_ms))
    }

    /// Ends an open hold without a charge (release or expiry), with the voids that follow.
    pub(super) fn end_uncharged(
        &mut self,
        token: &str,
        state: HoldState,
        now_ms: i64,
    ) -> Vec<OutboxEntry> {
        let hold = self.end_hold(token, state, 0, now_ms);
        let mut entries = self.void_released(&hold.wallet, &hold.split, &hold.id, now_ms);
        entries.push(OutboxEntry::Hold(hold));
        entries
    }
}

/// The ledger entry of a grant paying `amount_minor` of its wallet's debt.
pub(super) fn repayment_entry(
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

pub(super) fn find_grant<'a>(grants: &'a mut [Grant], id: &GrantId) -> &'a mut Grant {
    // A hold's split names grants of its wallet, and grants are never removed while held.
    grants
        .iter_mut()
        .find(|g| &g.terms.id == id)
        .expect("a held grant is in its wallet")
}

pub(super) fn denial(shortfall: Shortfall) -> Denial {
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

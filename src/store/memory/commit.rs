//! Commit: a hold charged (up to what it may overrun to) and the rest given back (see
//! `lua/commit.lua`).

// The in-process store's imports are its parent's.
use super::*;

/// Long for a reason: a commit's checks (ended, repeated, too large) and then its writes (the
/// charge split over grants and flex, the rest given back, debt, limits, events), in the order
/// `lua/commit.lua` has them, so the two read alike.
pub(super) fn apply(
    store: &MemoryStore,
    op: CommitOp,
) -> Result<Written<CommitReceipt>, StoreError> {
    let now = store.clock.now_ms();
    store.ensure_outbox_room()?;
    let mut state = store.held_account(&op.id, now)?;
    let announced = state.holds[op.id.token()].wallet.clone();
    let before = state.wallet_available(&announced, now);
    let hold = &state.holds[op.id.token()];
    match (hold.state, &hold.commit) {
        (HoldState::Held, _) => {}
        (HoldState::Committed, Some(record)) if record.requested_minor == op.amount_minor => {
            return Ok(Written {
                value: commit_receipt(&op.id, record),
                durable: Durable::UpTo(store.last_seq()),
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
    store.retain(now, Retained::Hold(op.id.clone()));
    let mut entries = vec![OutboxEntry::Charge(entry)];
    entries.extend(voids);
    entries.push(OutboxEntry::Hold(hold));
    entries.extend(store.announce(&mut state, &announced, Change::from(before), now));
    let seq = store.append(now, entries);
    Ok(Written {
        value: commit_receipt(&op.id, &record),
        durable: Durable::UpTo(seq),
    })
}

pub(super) fn commit_receipt(id: &ReservationId, record: &CommitRecord) -> CommitReceipt {
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

//! Charge: a one-shot charge with no hold (see `lua/charge.lua`).

// The in-process store's imports are its parent's.
use super::*;

pub(super) fn apply(
    store: &MemoryStore,
    op: ChargeOp,
) -> Result<Written<Decision<ChargeReceipt>>, StoreError> {
    let now = store.clock.now_ms();
    store.ensure_outbox_room()?;
    let denied = |reason, available_minor| {
        Ok(store.denied(Denial {
            reason,
            available_minor,
            limit: None,
        }))
    };
    let Some(mut state) = store.account_mut(&op.account) else {
        return denied(DenyReason::AccountNotFound, 0);
    };
    if let Some(Reply::Charge(receipt)) = state.recall(op.idempotency.as_ref())? {
        return Ok(store.replayed(receipt));
    }
    store.roll(&mut state, &op.wallet, now);
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
            durable: Durable::UpTo(store.last_seq()),
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
    let reply = op.idempotency.map(|i| (i, Reply::Charge(receipt.clone())));
    let change = Change {
        available_before: before,
        limit_rooms,
        credit_came_in: false,
    };
    let entries = vec![OutboxEntry::Charge(entry)];
    let durable = store.allowed(&mut state, entries, reply, &announced, change, now);
    Ok(Written {
        value: Decision::Allowed(receipt),
        durable,
    })
}

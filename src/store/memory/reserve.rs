//! Reserve: a hold drawn from the wallet's grants in consumption order, within the spend
//! limits, or a denial saying why (see `lua/reserve.lua`).

// The in-process store's imports are its parent's.
use super::*;

pub(super) fn apply(
    store: &MemoryStore,
    op: ReserveOp,
) -> Result<Written<Decision<ReserveReceipt>>, StoreError> {
    let now = store.clock.now_ms();
    store.ensure_outbox_room()?;
    let Some(mut state) = store.account_mut(op.id.account()) else {
        let denial = Denial {
            reason: DenyReason::AccountNotFound,
            available_minor: 0,
            limit: None,
        };
        return Ok(store.denied(denial));
    };
    if let Some(Reply::Reserve(receipt)) = state.recall(op.idempotency.as_ref())? {
        return Ok(store.replayed(receipt));
    }
    store.roll(&mut state, &op.wallet, now);
    let announced = op.wallet.clone();
    let before = state.wallet_available(&announced, now);
    let limit_rooms = state.limit_rooms(now);
    let available = state.available(&op.wallet, &op.feature, now);
    let (op, split) = match decide(&mut state, op, available, now) {
        Ok(decided) => decided,
        Err(denial) => return Ok(store.denied(denial)),
    };
    state.adjust_held(&op.wallet, &split, 1);
    let limits = state.hold_limits(&op.labels, op.amount_minor);
    let receipt = ReserveReceipt {
        id: op.id.clone(),
        wallet: op.wallet.clone(),
        amount_minor: op.amount_minor,
        expires_at_ms: now + op.ttl_ms,
        split: split.clone(),
        available_minor: available - op.amount_minor,
    };
    let idempotency = op.idempotency.clone();
    let hold = new_hold(op, split, limits, now);
    state.holds.insert(hold.id.token().to_owned(), hold.clone());
    store.watch_expiry(hold.expires_at_ms, &hold.id);
    let reply = idempotency.map(|i| (i, Reply::Reserve(receipt.clone())));
    let change = Change {
        available_before: before,
        limit_rooms,
        credit_came_in: false,
    };
    let entries = vec![OutboxEntry::Hold(hold)];
    let durable = store.allowed(&mut state, entries, reply, &announced, change, now);
    Ok(Written {
        value: Decision::Allowed(receipt),
        durable,
    })
}

/// What the hold is and what it takes of which grant, or why there is none: the account must be
/// active, the spend limits may cap the amount, and a partial hold takes what is left down to
/// its minimum.
fn decide(
    state: &mut AccountState,
    op: ReserveOp,
    available: i64,
    now: i64,
) -> Result<(ReserveOp, Vec<Portion>), Denial> {
    if state.account.status == AccountStatus::Suspended {
        return Err(Denial {
            reason: DenyReason::AccountSuspended,
            available_minor: available,
            limit: None,
        });
    }
    let capped = state.limit_cap(&op.labels, op.amount_minor, op.min_amount_minor, now)?;
    let op = ReserveOp {
        amount_minor: capped,
        min_amount_minor: op.min_amount_minor.min(capped),
        ..op
    };
    let drawn = match state.draw(&op.wallet, &op.feature, now, op.amount_minor) {
        Err(Shortfall::Insufficient { available_minor })
            if available_minor > 0 && available_minor >= op.min_amount_minor =>
        {
            state
                .draw(&op.wallet, &op.feature, now, available_minor)
                .map(|split| (split, available_minor))
        }
        drawn => drawn.map(|split| (split, op.amount_minor)),
    };
    let (split, amount_minor) = drawn.map_err(denial)?;
    Ok((ReserveOp { amount_minor, ..op }, split))
}

/// The hold a reserve makes.
fn new_hold(op: ReserveOp, split: Vec<Portion>, limits: Vec<String>, now: i64) -> Hold {
    Hold {
        id: op.id,
        wallet: op.wallet,
        feature: op.feature,
        amount_minor: op.amount_minor,
        split,
        created_at_ms: now,
        expires_at_ms: now + op.ttl_ms,
        state: HoldState::Held,
        labels: op.labels,
        limits,
        price: op.price,
        overrun: op.overrun,
        stop: op.stop,
        model: op.model,
        idempotency_key: op.idempotency.map(|i| i.key),
        commit: None,
        release: None,
        version: 1,
    }
}

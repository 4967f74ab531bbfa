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
        return Ok(Written {
            value: Decision::Denied(Denial {
                reason: DenyReason::AccountNotFound,
                available_minor: 0,
                limit: None,
            }),
            durable: Durable::UpTo(store.last_seq()),
        });
    };
    if let Some(Reply::Reserve(receipt)) = state.recall(op.idempotency.as_ref())? {
        return Ok(Written {
            value: Decision::Allowed(receipt.clone()),
            durable: Durable::UpTo(store.last_seq()),
        });
    }
    store.roll(&mut state, &op.wallet, now);
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
            durable: Durable::UpTo(store.last_seq()),
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
                durable: Durable::UpTo(store.last_seq()),
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
                durable: Durable::UpTo(store.last_seq()),
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
    store.watch_expiry(hold.expires_at_ms, &op.id);
    let mut entries = vec![OutboxEntry::Hold(hold)];
    if let Some(idempotency) = op.idempotency {
        let account = state.account.id.clone();
        store.retain(now, Retained::Reply(account, idempotency.key.clone()));
        let remembered = state.remember(idempotency, Reply::Reserve(receipt.clone()), now);
        entries.push(OutboxEntry::Remember(remembered));
    }
    entries.extend(store.announce(
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
        durable: Durable::UpTo(store.append(now, entries)),
    })
}

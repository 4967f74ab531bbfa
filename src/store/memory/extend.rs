//! Extend: a hold made larger, longer, or both (see `lua/extend.lua`).

// The in-process store's imports are its parent's.
use super::*;

pub(super) fn apply(
    store: &MemoryStore,
    op: ExtendOp,
) -> Result<Written<Decision<ExtendReceipt>>, StoreError> {
    let now = store.clock.now_ms();
    store.ensure_outbox_room()?;
    let mut state = store.held_account(&op.id, now)?;
    let announced = state.holds[op.id.token()].wallet.clone();
    let before = state.wallet_available(&announced, now);
    let limit_rooms = state.limit_rooms(now);
    if let Some(Reply::Extend(receipt)) = state.recall(op.idempotency.as_ref())? {
        return Ok(store.replayed(receipt));
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
            durable: Durable::UpTo(store.last_seq()),
        });
    }
    let hold_limits = state.counted_limits(&hold.limits, hold.created_at_ms);
    if let Err(denial) = state.extend_limits(&hold_limits, op.additional_minor, now) {
        return Ok(Written {
            value: Decision::Denied(denial),
            durable: Durable::UpTo(store.last_seq()),
        });
    }
    let extra = match state.draw(&wallet, &feature, now, op.additional_minor) {
        Ok(extra) => extra,
        Err(shortfall) => {
            return Ok(Written {
                value: Decision::Denied(denial(shortfall)),
                durable: Durable::UpTo(store.last_seq()),
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
        store.watch_expiry(hold.expires_at_ms, &op.id);
    }
    let receipt = ExtendReceipt {
        id: op.id.clone(),
        amount_minor: hold.amount_minor,
        expires_at_ms: hold.expires_at_ms,
        split: hold.split.clone(),
        available_minor: available - op.additional_minor,
    };
    let reply = op.idempotency.map(|i| (i, Reply::Extend(receipt.clone())));
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

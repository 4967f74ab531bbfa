//! Release: a hold given back whole (see `lua/release.lua`).

// The in-process store's imports are its parent's.
use super::*;

pub(super) fn apply(
    store: &MemoryStore,
    id: &ReservationId,
) -> Result<Written<ReleaseReceipt>, StoreError> {
    let now = store.clock.now_ms();
    store.ensure_outbox_room()?;
    let mut state = store.held_account(id, now)?;
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
                durable: Durable::UpTo(store.last_seq()),
            });
        }
        _ => return Err(ended(hold)),
    }
    let mut entries = state.end_uncharged(id.token(), HoldState::Released, now);
    let record = state.holds[id.token()]
        .release
        .clone()
        .expect("end_hold records a release");
    store.retain(now, Retained::Hold(id.clone()));
    entries.extend(store.announce(&mut state, &announced, Change::from(before), now));
    let seq = store.append(now, entries);
    Ok(Written {
        value: ReleaseReceipt {
            id: id.clone(),
            released_minor: record.released_minor,
            available_minor: record.available_minor,
        },
        durable: Durable::UpTo(seq),
    })
}

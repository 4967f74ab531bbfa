//! Check: whether an amount could be reserved now, holding nothing (see `lua/check.lua`).

// The in-process store's imports are its parent's.
use super::*;

pub(super) fn apply(
    store: &MemoryStore,
    account: &AccountId,
    wallet: &WalletId,
    feature: &FeatureId,
    amount_minor: i64,
    labels: &Labels,
) -> Result<Decision<CheckReceipt>, StoreError> {
    let now = store.clock.now_ms();
    let Some(state) = store.accounts.get(account) else {
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

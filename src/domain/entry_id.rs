//! Every ledger entry id, spelled in one place. An id is derived from what the entry is about
//! wherever the same entry may be made twice (a grant arriving through the API and from the
//! ledger, a commit retried, a period reset judged by two stores), so that it is written once.
//! Ids cannot contain `/`, so distinct entries never share an id.
//!
//! The Lua scripts do not spell ids: the ones the Redis store makes in a script (`periods.lua`'s
//! resets, `hold.lua`'s voids of released credit, `add_grant.lua`'s repayments) come from Lua
//! functions made from these (see `entry_id_functions` in `store/redis/scripts.rs`), and the
//! differential test holds the two stores' entries equal.

use super::{AccountId, GrantId, ReservationId};

/// What starts the id of a recurring grant's refill, by which the ledger finds refills.
pub const REFILL_PREFIX: &str = "refill/";

/// A grant.
pub fn grant(account: &AccountId, grant: &GrantId) -> String {
    format!("grant/{account}/{grant}")
}

/// A grant's unheld remainder taken away.
pub fn void(account: &AccountId, grant: &GrantId) -> String {
    format!("void/{account}/{grant}")
}

/// What a released hold gives back to a grant voided while the hold was open: taken away too.
pub fn void_released(account: &AccountId, grant: &GrantId, token: &str) -> String {
    format!("void/{account}/{grant}/{token}")
}

/// Debt repaid from a new grant.
pub fn repay(account: &AccountId, grant: &GrantId) -> String {
    format!("repay/{account}/{grant}")
}

/// A hold charged: a hold is committed once.
pub fn commit(reservation: &ReservationId) -> String {
    format!("commit/{reservation}")
}

/// A recurring grant's unused allowance lapsing at the end of period `index - 1`.
pub fn lapse(account: &AccountId, grant: &GrantId, index: i64) -> String {
    format!("lapse/{account}/{grant}/{index}")
}

/// A recurring grant's allowance for period `index`.
pub fn refill(account: &AccountId, grant: &GrantId, index: i64) -> String {
    format!("{REFILL_PREFIX}{account}/{grant}/{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_different_entries_differ() {
        let account = AccountId::parse("acme").unwrap();
        let grant_id = GrantId::parse("g1").unwrap();
        let ids = [
            grant(&account, &grant_id),
            void(&account, &grant_id),
            void_released(&account, &grant_id, "r1"),
            repay(&account, &grant_id),
            lapse(&account, &grant_id, 2),
            refill(&account, &grant_id, 2),
        ];
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(refill(&account, &grant_id, 2).starts_with(REFILL_PREFIX));
    }
}

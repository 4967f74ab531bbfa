//! Accounts rebuilt from the ledger in the in-process store: loaded at start, compared and
//! replaced by reconcile.

use async_trait::async_trait;

// The in-process store's rules and plumbing are its parent's.
use super::*;

#[async_trait]
impl Rebuild for MemoryStore {
    async fn load(&self, accounts: Vec<AccountSnapshot>) -> Result<(), StoreError> {
        let mut built = Vec::with_capacity(accounts.len());
        for snapshot in accounts {
            if let Some(account) = build_account(snapshot, self.clock.now_ms())? {
                built.push(account);
            }
        }
        self.accounts.clear();
        self.expiries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.retained
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for account in built {
            self.install(account);
        }
        self.retained
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .make_contiguous()
            .sort_by_key(|(at, _)| *at);
        Ok(())
    }

    async fn snapshot(
        &self,
        account: &AccountId,
    ) -> Result<Option<Written<AccountSnapshot>>, StoreError> {
        Ok(self.accounts.get(account).map(|state| Written {
            value: state.balance_snapshot(),
            durable: Durable::UpTo(self.last_seq()),
        }))
    }

    async fn replace(
        &self,
        snapshot: AccountSnapshot,
        expected: &AccountSnapshot,
    ) -> Result<bool, StoreError> {
        let Some(built) = build_account(snapshot, self.clock.now_ms())? else {
            return Ok(false);
        };
        let Some(mut state) = self.account_mut(&built.state.account.id) else {
            return Ok(false);
        };
        if &state.balance_snapshot() != expected {
            return Ok(false);
        }
        let Built {
            state: new_state,
            expiries,
            retained,
        } = built;
        *state = new_state;
        drop(state);
        for (at, id) in expiries {
            self.watch_expiry(at, &id);
        }
        for (at, what) in retained {
            self.retain(at, what);
        }
        Ok(true)
    }

    async fn accounts(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountId>, StoreError> {
        let mut ids: Vec<AccountId> = self
            .accounts
            .iter()
            .map(|entry| entry.key().clone())
            .filter(|id| after.is_none_or(|after| id > after))
            .collect();
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }
}

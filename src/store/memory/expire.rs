//! The expiry sweep in the in-process store: holds past their expiry released, old replies
//! forgotten.

use async_trait::async_trait;

// The in-process store's rules and plumbing are its parent's.
use super::*;

#[async_trait]
impl Expiry for MemoryStore {
    async fn expire_due(&self, limit: usize) -> Result<Swept, StoreError> {
        let now = self.clock.now_ms();
        let due: Vec<ReservationId> = {
            let mut expiries = self.expiries.lock().unwrap_or_else(|e| e.into_inner());
            let mut due = Vec::new();
            while due.len() < limit {
                match expiries.first() {
                    Some((at, _)) if *at <= now => {
                        let (_, id) = expiries.pop_first().expect("first exists");
                        due.push(id);
                    }
                    _ => break,
                }
            }
            due
        };
        let mut swept = Swept {
            examined: due.len(),
            expired: 0,
        };
        for id in due {
            let Some(mut state) = self.account_mut(id.account()) else {
                continue;
            };
            let due_in = state
                .holds
                .get(id.token())
                .filter(|h| h.state == HoldState::Held && h.expires_at_ms <= now)
                .map(|h| h.wallet.clone());
            if let Some(wallet) = due_in {
                self.roll(&mut state, &wallet, now);
                let before = state.wallet_available(&wallet, now);
                let mut entries = state.end_uncharged(id.token(), HoldState::Expired, now);
                self.retain(now, Retained::Hold(id.clone()));
                entries.extend(self.expired(&mut state, &id, &wallet, before, now));
                self.append(now, entries);
                swept.expired += 1;
            }
        }
        Ok(swept)
    }

    async fn forget_older_than(
        &self,
        retention_ms: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let cutoff = self.clock.now_ms() - retention_ms;
        let mut examined = 0;
        while examined < limit {
            let next = {
                let mut retained = self.retained.lock().unwrap_or_else(|e| e.into_inner());
                match retained.front() {
                    Some((at, _)) if *at < cutoff => retained.pop_front(),
                    _ => None,
                }
            };
            let Some((_, what)) = next else {
                break;
            };
            examined += 1;
            match what {
                Retained::Reply(account, key) => {
                    if let Some(mut state) = self.account_mut(&account) {
                        let old = state.remembered.get(&key).is_some_and(|r| r.at_ms < cutoff);
                        if old {
                            state.remembered.remove(&key);
                        }
                    }
                }
                Retained::Hold(id) => {
                    if let Some(mut state) = self.account_mut(id.account()) {
                        let old = state
                            .holds
                            .get(id.token())
                            .is_some_and(|h| h.state != HoldState::Held);
                        if old {
                            state.holds.remove(id.token());
                        }
                    }
                }
            }
        }
        Ok(examined)
    }
}

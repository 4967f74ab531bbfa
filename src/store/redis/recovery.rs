//! Loading what Redis lost from the ledger: an absent account, once per replica however many
//! calls find it absent, under the epoch it will live in (noted in the ledger, which from then
//! on drops records of the account from a lost epoch); and, after a partition's keys were lost,
//! the accounts with open holds, so that those holds still expire.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use redis::AsyncCommands;

use super::{RedisStore, codec};
use crate::domain::{AccountId, GrantId, HoldState, LimitState, Postpaid, WalletId};
use crate::record::{AccountSnapshot, AlertsSnapshot};
use crate::store::{Spending, StoreError};

/// Loads of one account started over because Redis lost its keys again meanwhile, before the
/// call fails.
const HYDRATE_ATTEMPTS_MAX: usize = 3;

/// Accounts with open holds read from the ledger, and loaded, per round of the sync loop when
/// a lost partition is healed.
const HEAL_BATCH_LEN: usize = 100;

/// What [`crate::store::OutboxStore::heal`] has yet to load again.
#[derive(Debug, Default)]
pub(super) struct Healing {
    /// Partitions this replica made again.
    partitions: BTreeSet<u32>,
    /// The last account of the ledger's listing of accounts with open holds already looked
    /// at; `None` starts at the first.
    after: Option<AccountId>,
}

impl RedisStore {
    /// Notes a partition this replica made again, whose accounts with open holds are to be
    /// loaded again.
    pub(super) fn note_lost(&self, partition: u32) {
        let mut healing = self.healing.lock().unwrap_or_else(|e| e.into_inner());
        healing.partitions.insert(partition);
        // The listing starts over, for the accounts of this partition before the cursor.
        healing.after = None;
    }

    /// Loads an account Redis does not have from the ledger. Returns false when the ledger
    /// does not have it either. Calls of this replica that find the account absent at once
    /// wait for one load; replicas loading it at once cannot add its credit twice (the script
    /// writes only if the account is still absent).
    pub(super) async fn hydrate(&self, account: &AccountId) -> Result<bool, StoreError> {
        let loading = self
            .hydrating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(account.clone())
            .or_default()
            .clone();
        let loaded = {
            let _turn = loading.lock().await;
            self.hydrate_once(account).await
        };
        let mut hydrating = self.hydrating.lock().unwrap_or_else(|e| e.into_inner());
        // Only this call and the map hold it: nobody else waits, so the entry can go.
        if Arc::strong_count(&loading) == 2 {
            hydrating.remove(account);
        }
        loaded
    }

    /// One load of an absent account: the partition's epoch first, then the ledger's account,
    /// noted there as loaded in that epoch (so that the ledger drops records of the account
    /// from before, which Redis lost), then the hydrate script, which writes it only in that
    /// same epoch. Redis losing its keys again meanwhile starts it over, a few times at most.
    async fn hydrate_once(&self, account: &AccountId) -> Result<bool, StoreError> {
        let keys = self.keys(account);
        let account_key = keys.account().to_owned();
        if self
            .call(|mut c| async move { c.exists::<_, bool>(account_key).await })
            .await?
        {
            // Loaded by the call this one waited for.
            return Ok(true);
        }
        for _ in 0..HYDRATE_ATTEMPTS_MAX {
            let epoch = self.epoch(&keys.partition).await?;
            let now = self.now_ms().await?;
            let snapshot = self
                .ledger
                .load_for_store(account, &epoch, now, self.settings.retention_ms)
                .await
                .map_err(|e| StoreError::Unavailable(format!("ledger, to load {account}: {e}")))?;
            let Some(mut snapshot) = snapshot.filter(|s| s.account.is_some()) else {
                return Ok(false);
            };
            let args = account_args(account, &mut snapshot)?;
            let mut invocation = self.scripts.hydrate.prepare_invoke();
            invocation
                .key(keys.account())
                .key(keys.partition.expiries())
                .key(keys.partition.accounts())
                .key(keys.partition.epoch())
                .arg(&keys.base)
                .arg(account.as_str())
                .arg(self.retention());
            for arg in &args {
                invocation.arg(arg);
            }
            invocation.arg(&epoch);
            let reply = self.invoke(invocation).await?;
            if reply.first().map(String::as_str) != Some("moved") {
                metrics::counter!(crate::telemetry::STORE_HYDRATIONS_TOTAL).increment(1);
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(format!(
            "redis lost its keys {HYDRATE_ATTEMPTS_MAX} times while {account} was loaded"
        )))
    }

    /// Loads one page of the accounts of the partitions this replica made again that have
    /// open holds in the ledger (and are still absent from Redis), so that the sweep expires
    /// those holds: nothing else would load an account nobody calls for. A page at a time, so
    /// that the sync loop, which calls it, goes on carrying the outbox meanwhile.
    pub(super) async fn load_open_holds(&self) -> Result<(), StoreError> {
        let (partitions, after) = {
            let healing = self.healing.lock().unwrap_or_else(|e| e.into_inner());
            (healing.partitions.clone(), healing.after.clone())
        };
        if partitions.is_empty() {
            return Ok(());
        }
        let accounts = self
            .ledger
            .accounts_with_open_holds(after.as_ref(), HEAL_BATCH_LEN)
            .await
            .map_err(|e| StoreError::Unavailable(format!("ledger, to heal: {e}")))?;
        let mut loaded = 0usize;
        for account in &accounts {
            if partitions.contains(&self.keys(account).partition.index) {
                self.hydrate(account).await?;
                loaded += 1;
            }
        }
        if loaded > 0 {
            tracing::info!(
                accounts = loaded,
                "accounts with open holds loaded again from the ledger"
            );
        }
        let mut healing = self.healing.lock().unwrap_or_else(|e| e.into_inner());
        // A partition lost meanwhile started the listing over: leave it so.
        if healing.partitions == partitions && healing.after == after {
            if accounts.len() < HEAL_BATCH_LEN {
                *healing = Healing::default();
            } else {
                healing.after = accounts.last().cloned();
            }
        }
        Ok(())
    }
}

/// The hydrate and replace scripts' arguments for an account rebuilt from the ledger: its
/// fields, grants (with what its open holds take of each, checked to fit), holds and replies.
pub(super) fn account_args(
    account: &AccountId,
    snapshot: &mut AccountSnapshot,
) -> Result<[String; 7], StoreError> {
    let acct = snapshot
        .account
        .take()
        .ok_or_else(|| StoreError::Inconsistent(format!("no account {account} to write")))?;
    // Held amounts come from the open holds, as in the in-memory store, and must fit.
    let mut held: HashMap<GrantId, i64> = HashMap::new();
    let mut flex_held: BTreeMap<WalletId, i64> = BTreeMap::new();
    for hold in snapshot.holds.iter().filter(|h| h.state == HoldState::Held) {
        for portion in &hold.split {
            if portion.grant.is_grant() {
                *held.entry(portion.grant.clone()).or_default() += portion.amount_minor;
            } else {
                *flex_held.entry(hold.wallet.clone()).or_default() += portion.amount_minor;
            }
        }
    }
    let mut limits: BTreeMap<String, LimitState> = snapshot
        .limits
        .iter()
        .map(|l| {
            let limit = LimitState {
                held_minor: 0,
                ..l.clone()
            };
            (l.limit.id(), limit)
        })
        .collect();
    for hold in snapshot.holds.iter().filter(|h| h.state == HoldState::Held) {
        for id in &hold.limits {
            // A limit set again after the hold was taken never counted it.
            if let Some(limit) = limits.get_mut(id)
                && limit.since_ms <= hold.created_at_ms
            {
                limit.held_minor += hold.amount_minor;
            }
        }
    }
    let mut postpaid: BTreeMap<WalletId, Postpaid> = snapshot.postpaid.iter().cloned().collect();
    for (wallet, amount) in flex_held {
        postpaid.entry(wallet).or_default().flex_held_minor = amount;
    }
    for (grant, amount) in &held {
        let fits = snapshot
            .grants
            .iter()
            .any(|g| &g.terms.id == grant && *amount <= g.remaining_minor);
        if !fits {
            return Err(StoreError::Inconsistent(format!(
                "the ledger's open holds of {account} take {amount} from grant {grant}, \
                     which does not have it"
            )));
        }
    }
    let grants: Vec<serde_json::Value> = snapshot
        .grants
        .iter_mut()
        .map(|g| {
            g.held_minor = held.get(&g.terms.id).copied().unwrap_or(0);
            serde_json::json!({
                "id": g.terms.id.as_str(),
                "wallet": g.terms.wallet.as_str(),
                "grant": codec::encode_grant(g),
            })
        })
        .collect();
    let holds: Vec<serde_json::Value> = snapshot
        .holds
        .iter()
        .map(|h| serde_json::json!({"token": h.id.token(), "hold": codec::hold_fields(h)}))
        .collect();
    let replies: Vec<serde_json::Value> = snapshot
        .remembered
        .iter()
        .map(|r| {
            serde_json::json!({
                "key": r.key.as_str(), "fingerprint": r.fingerprint,
                "reply": codec::reply_json(&r.reply), "at": r.at_ms.to_string(),
            })
        })
        .collect();
    Ok([
        serde_json::json!({
            "status": acct.status.as_str(), "name": acct.display_name,
            "created": acct.created_at_ms.to_string(),
        })
        .to_string(),
        serde_json::Value::Array(grants).to_string(),
        serde_json::Value::Array(holds).to_string(),
        serde_json::Value::Array(replies).to_string(),
        postpaid_json(postpaid.iter()),
        limits_json(limits.values()),
        alerts_json(&snapshot.alerts),
    ])
}

/// Wallets' alerts as the scripts take them: `[{"wallet", "rules", "armed", "top_up", "open",
/// "made"}]`.
fn alerts_json(alerts: &[AlertsSnapshot]) -> String {
    let items: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            let (rules, top_up) = codec::encode_alerts(&a.alerts);
            let armed: String = a.armed.iter().map(|&x| if x { '1' } else { '0' }).collect();
            serde_json::json!({
                "wallet": a.wallet.as_str(), "rules": rules, "armed": armed, "top_up": top_up,
                "open": a.open_top_up.clone().unwrap_or_default(), "made": a.top_ups.to_string(),
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Spend limits as the scripts take them: `[{"id", "limit"}]`.
pub(super) fn limits_json<'a>(limits: impl Iterator<Item = &'a LimitState>) -> String {
    let items: Vec<serde_json::Value> = limits
        .map(|l| serde_json::json!({"id": l.limit.id(), "limit": codec::encode_limit(l)}))
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Wallets' flex and debt as the scripts take them: `[{"wallet", "postpaid"}]`.
pub(super) fn postpaid_json<'a>(
    wallets: impl Iterator<Item = (&'a WalletId, &'a Postpaid)>,
) -> String {
    let items: Vec<serde_json::Value> = wallets
        .filter(|(_, p)| !p.is_zero())
        .map(|(wallet, p)| {
            serde_json::json!({"wallet": wallet.as_str(), "postpaid": codec::encode_postpaid(p)})
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

//! What the Admin API changes in the in-process store: accounts, grants and their voids,
//! wallets' flex, alerts and spend limits.

use async_trait::async_trait;

// The in-process store's rules and plumbing are its parent's.
use super::*;

#[async_trait]
impl AccountAdmin for MemoryStore {
    async fn account(&self, account: &AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.accounts.get(account).map(|s| s.account.clone()))
    }

    async fn put_account(&self, update: AccountUpdate) -> Result<Written<Account>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let mut created = false;
        let mut state = self.accounts.entry(update.id.clone()).or_insert_with(|| {
            created = true;
            AccountState::new(Account {
                id: update.id.clone(),
                display_name: String::new(),
                status: AccountStatus::Active,
                created_at_ms: now,
            })
        });
        let unchanged = state.account.display_name == update.display_name
            && state.account.status == update.status;
        if unchanged && !created {
            return Ok(Written {
                value: state.account.clone(),
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        state.account.display_name = update.display_name;
        state.account.status = update.status;
        let account = state.account.clone();
        let seq = self.append(now, [OutboxEntry::Account(account.clone())]);
        Ok(Written {
            value: account,
            durable: Durable::UpTo(seq),
        })
    }

    /// Long for a reason: a grant's checks (a repeat, a conflict, the most grants, the money
    /// bound) and then its writes (the grant, debt repaid, a top-up answered, the events), in
    /// the order `lua/add_grant.lua` has them, so the two read alike.
    async fn add_grant(
        &self,
        account: &AccountId,
        terms: GrantTerms,
        grant_entry: GrantEntry,
    ) -> Result<Written<GrantReceipt>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let mut entries = Vec::new();
        let mut state = self.account_or_create(account, now, &mut entries);
        let existing = state
            .wallets
            .values()
            .flatten()
            .find(|g| g.terms.id == terms.id);
        if let Some(existing) = existing {
            if existing.terms != terms {
                return Err(StoreError::GrantConflict { grant: terms.id });
            }
            // As it is now (reset if due), though nothing is written: a replay changes nothing.
            let grants = state.rolled(&terms.wallet, now);
            let grant = grants
                .iter()
                .find(|g| g.terms.id == terms.id)
                .expect("a grant is in its own wallet")
                .clone();
            let totals = WalletTotals::of(&grants, &state.postpaid(&terms.wallet), now);
            return Ok(Written {
                value: GrantReceipt {
                    grant,
                    created: false,
                    available_minor: totals.available_minor,
                    now_ms: now,
                },
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        self.roll(&mut state, &terms.wallet, now);
        let announced = terms.wallet.clone();
        let before = state.wallet_available(&announced, now);
        let grants = state.grants(&terms.wallet);
        let active = grants.iter().filter(|g| g.is_active(now)).count();
        if active >= GRANTS_PER_WALLET_MAX {
            return Err(StoreError::TooManyGrants {
                wallet: terms.wallet,
                max: GRANTS_PER_WALLET_MAX,
            });
        }
        let mut grant = Grant::new(terms.clone(), now);
        let bound = state.wallet_bound(&terms.wallet, now) + grant.bound_minor();
        if bound > MINOR_MAX {
            return Err(StoreError::BalanceTooLarge {
                wallet: terms.wallet,
            });
        }
        let repayment = state.repay_debt(&mut grant, now);
        let entry = LedgerEntry {
            id: grant_entry.id,
            kind: EntryKind::Grant,
            account: account.clone(),
            wallet: terms.wallet.clone(),
            feature: None,
            model: None,
            usage: None,
            amount_minor: terms.amount_minor,
            split: vec![],
            reservation: None,
            grant: Some(terms.id.clone()),
            idempotency_key: None,
            labels: Default::default(),
            reason: grant_entry.reason.clone(),
            overrun_minor: 0,
            refund_of: grant_entry.refund_of.clone(),
            at_ms: now,
        };
        state
            .wallets
            .entry(terms.wallet.clone())
            .or_default()
            .push(grant.clone());
        // Only the open request is closed, and only that one is recorded as answered.
        let answered = match (&grant_entry.answers, state.alerts.get_mut(&terms.wallet)) {
            (Some(request), Some((_, alerts))) => alerts.close_top_up(request),
            _ => false,
        };
        entries.push(OutboxEntry::Grant {
            grant: Grant {
                remaining_minor: terms.amount_minor,
                ..grant.clone()
            },
            entry,
            answers: grant_entry.answers.filter(|_| answered),
        });
        entries.extend(repayment.map(OutboxEntry::Charge));
        let receipt = GrantReceipt {
            grant,
            created: true,
            available_minor: state.wallet_available(&terms.wallet, now),
            now_ms: now,
        };
        let change = Change {
            available_before: before,
            credit_came_in: true,
            ..Change::default()
        };
        let durable = self.allowed(&mut state, entries, None, &announced, change, now);
        Ok(Written {
            value: receipt,
            durable,
        })
    }

    async fn set_wallet(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        flex_cap_minor: i64,
    ) -> Result<Written<Postpaid>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let mut entries = Vec::new();
        let mut state = self.account_or_create(account, now, &mut entries);
        self.roll(&mut state, wallet, now);
        let announced = wallet.clone();
        let before = state.wallet_available(&announced, now);
        let current = state.postpaid(wallet);
        if current.flex_cap_minor == flex_cap_minor && entries.is_empty() {
            return Ok(Written {
                value: current,
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        let bound = state.wallet_bound(wallet, now) - current.flex_cap_minor + flex_cap_minor;
        if bound > MINOR_MAX {
            return Err(StoreError::BalanceTooLarge {
                wallet: wallet.clone(),
            });
        }
        let postpaid = state.postpaid.entry(wallet.clone()).or_default();
        postpaid.flex_cap_minor = flex_cap_minor;
        let value = *postpaid;
        if value.is_zero() {
            // As the scripts do: a wallet with nothing postpaid keeps no record of it.
            state.postpaid.remove(wallet);
        }
        entries.push(OutboxEntry::Wallet {
            account: account.clone(),
            wallet: wallet.clone(),
            flex_cap_minor,
            at_ms: now,
        });
        let change = Change {
            available_before: before,
            credit_came_in: true,
            ..Change::default()
        };
        let durable = self.allowed(&mut state, entries, None, &announced, change, now);
        Ok(Written { value, durable })
    }

    async fn set_limit(
        &self,
        account: &AccountId,
        change: LimitChange,
    ) -> Result<Written<Vec<LimitState>>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let limit_id = limit_id(&change.label_key, &change.label_value, change.window);
        // What is shown is in its current window, as every other call sees it.
        let listed = |limits: &BTreeMap<String, LimitState>| -> Vec<LimitState> {
            limits.values().map(|l| l.at(now)).collect()
        };
        let Some(amount_minor) = change.amount_minor else {
            let mut state = self
                .account_mut(account)
                .ok_or_else(|| StoreError::AccountNotFound(account.clone()))?;
            let removed = state
                .limits
                .remove(&limit_id)
                .ok_or(StoreError::LimitNotFound {
                    account: account.clone(),
                    limit: limit_id,
                })?;
            let seq = self.append(
                now,
                [OutboxEntry::Limit {
                    account: account.clone(),
                    limit: removed.limit,
                    since_ms: removed.since_ms,
                    removed: true,
                    at_ms: now,
                }],
            );
            return Ok(Written {
                value: listed(&state.limits),
                durable: Durable::UpTo(seq),
            });
        };
        let mut entries = Vec::new();
        let mut state = self.account_or_create(account, now, &mut entries);
        let limit = SpendLimit {
            label_key: change.label_key,
            label_value: change.label_value,
            window: change.window,
            amount_minor,
        };
        let count = state.limits.len();
        match state.limits.get_mut(&limit_id) {
            Some(existing) if existing.limit == limit => {
                return Ok(Written {
                    value: listed(&state.limits),
                    durable: Durable::UpTo(self.last_seq()),
                });
            }
            Some(existing) => existing.limit.amount_minor = amount_minor,
            None if count >= LIMITS_PER_ACCOUNT_MAX => {
                return Err(StoreError::TooManyLimits {
                    account: account.clone(),
                    max: LIMITS_PER_ACCOUNT_MAX,
                });
            }
            None => {
                state
                    .limits
                    .insert(limit_id.clone(), LimitState::new(limit, now));
            }
        }
        let since_ms = state.limits[&limit_id].since_ms;
        entries.push(OutboxEntry::Limit {
            account: account.clone(),
            limit: state.limits[&limit_id].limit.clone(),
            since_ms,
            removed: false,
            at_ms: now,
        });
        Ok(Written {
            value: listed(&state.limits),
            durable: Durable::UpTo(self.append(now, entries)),
        })
    }

    async fn set_alerts(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        alerts: WalletAlerts,
    ) -> Result<Written<AlertsView>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let mut entries = Vec::new();
        let mut state = self.account_or_create(account, now, &mut entries);
        self.roll(&mut state, wallet, now);
        let level = state.level(wallet, now);
        let previous = state.alerts.remove(wallet).map(|(_, kept)| kept);
        let kept = AlertState::armed_at(&alerts, &level, previous.as_ref());
        if !alerts.is_empty() || kept.open_top_up.is_some() || kept.top_ups > 0 {
            state.alerts.insert(wallet.clone(), (alerts.clone(), kept));
        }
        entries.push(OutboxEntry::Alerts {
            account: account.clone(),
            wallet: wallet.clone(),
            armed: state.alerts_view(wallet).armed,
            alerts,
            at_ms: now,
        });
        // A wallet already below its top-up threshold asks at once.
        let available_before = level.available_minor;
        let change = Change::from(available_before);
        let durable = self.allowed(&mut state, entries, None, wallet, change, now);
        Ok(Written {
            value: state.alerts_view(wallet),
            durable,
        })
    }

    async fn void_grant(
        &self,
        account: &AccountId,
        grant_id: &GrantId,
        reason: String,
        entry_id: String,
    ) -> Result<Written<VoidReceipt>, StoreError> {
        let now = self.clock.now_ms();
        self.ensure_outbox_room()?;
        let mut state = self
            .account_mut(account)
            .ok_or_else(|| StoreError::AccountNotFound(account.clone()))?;
        let not_found = || StoreError::GrantNotFound {
            account: account.clone(),
            grant: grant_id.clone(),
        };
        let wallet = state
            .wallets
            .iter()
            .find(|(_, grants)| grants.iter().any(|g| &g.terms.id == grant_id))
            .map(|(wallet, _)| wallet.clone())
            .ok_or_else(not_found)?;
        self.roll(&mut state, &wallet, now);
        let announced = wallet.clone();
        let before = state.wallet_available(&announced, now);
        let grants = state.wallets.get_mut(&wallet).expect("found above");
        let grant = find_grant(grants, grant_id);
        if grant.voided_at_ms.is_some() {
            let grant = grant.clone();
            return Ok(Written {
                value: VoidReceipt {
                    grant,
                    voided_minor: 0,
                    available_minor: state.wallet_available(&wallet, now),
                },
                durable: Durable::UpTo(self.last_seq()),
            });
        }
        let voided = grant.spendable_minor();
        grant.remaining_minor -= voided;
        grant.voided_at_ms = Some(now);
        let grant = grant.clone();
        let entry = LedgerEntry {
            id: entry_id,
            kind: EntryKind::Void,
            account: account.clone(),
            wallet: wallet.clone(),
            feature: None,
            model: None,
            usage: None,
            amount_minor: voided,
            split: vec![Portion {
                grant: grant_id.clone(),
                amount_minor: voided,
            }],
            reservation: None,
            grant: Some(grant_id.clone()),
            idempotency_key: None,
            labels: Default::default(),
            reason: Some(reason),
            overrun_minor: 0,
            refund_of: None,
            at_ms: now,
        };
        let entries = vec![OutboxEntry::Void { entry }];
        let change = Change::from(before);
        let durable = self.allowed(&mut state, entries, None, &announced, change, now);
        Ok(Written {
            value: VoidReceipt {
                grant,
                voided_minor: voided,
                available_minor: state.wallet_available(&wallet, now),
            },
            durable,
        })
    }
}

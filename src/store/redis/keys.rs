//! The Redis key layout, in one place.
//!
//! Every key starts with a namespace (`cg` unless the settings say otherwise), so that several
//! deployments, or tests, can share one Redis. Accounts are spread over a fixed number of
//! partitions by a hash of their id. Every key of a partition carries the partition's hash tag,
//! `{cg<N>}`, so every key one script touches (the account's keys and its partition's outbox
//! stream and expiry set) lives in one Cluster slot.
//!
//! | key | type | what |
//! |---|---|---|
//! | `cg:{cgN}:a/<account>/` | hash | the account: `status`, `name`, `created`; present = loaded |
//! | `cg:{cgN}:a/<account>/wallets` | set | wallets that have grants |
//! | `cg:{cgN}:a/<account>/grants:<wallet>` | hash | grant id → encoded grant (see `grants.lua`) |
//! | `cg:{cgN}:a/<account>/holds` | set | tokens of open holds |
//! | `cg:{cgN}:a/<account>/hold:<token>` | hash | one hold; ended holds expire after retention |
//! | `cg:{cgN}:a/<account>/idem:<key>` | hash | an idempotent reply; expires after retention |
//! | `cg:{cgN}:expiries` | sorted set | `<account>/<token>` of open holds, by expiry |
//! | `cg:{cgN}:outbox` | stream | outbox records for the ledger, one per operation |
//! | `cg:{cgN}:accounts` | set | ids of the accounts loaded in the partition |
//! | `cg:{cgN}:epoch` | string | the incarnation of the partition's keys: new once Redis lost them |
//!
//! Replicas also share one pub/sub channel, `cg:events` ([`events_channel`]), on which the
//! scripts announce wallets whose spendable balance crossed zero; the scripts name it from the
//! namespace at the start of the keys they are given.
//!
//! The account's *base*, `cg:{cgN}:a/<account>/`, is handed to the scripts, which append the
//! suffixes above; nothing else builds keys. Account ids cannot contain `/`, so no account's
//! keys can be spelled with another's id.

use crate::domain::AccountId;

/// Namespace when the settings do not say.
pub const NAMESPACE_DEFAULT: &str = "cg";

/// Whether `namespace` can start keys: 1–32 letters, digits, `_` or `-`.
pub fn valid_namespace(namespace: &str) -> bool {
    (1..=32).contains(&namespace.len())
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The channel events are published on, each as the JSON object `new_event` in events.lua makes.
pub fn events_channel(namespace: &str) -> String {
    format!("{namespace}:events")
}

/// Partitions when the settings do not say; fixed for the life of a deployment.
pub const PARTITIONS_DEFAULT: u32 = 16;

/// Keys of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub index: u32,
    prefix: String,
}

impl Partition {
    pub fn new(namespace: &str, index: u32) -> Partition {
        Partition {
            index,
            prefix: format!("{namespace}:{{{namespace}{index}}}:"),
        }
    }

    pub fn outbox(&self) -> String {
        format!("{}outbox", self.prefix)
    }

    /// The partition's epoch: the incarnation of its keys, which changes whenever Redis lost
    /// them. The scripts find it beside the outbox (`outbox.lua`'s `epoch_of`).
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    pub fn expiries(&self) -> String {
        format!("{}expiries", self.prefix)
    }

    pub fn accounts(&self) -> String {
        format!("{}accounts", self.prefix)
    }

    /// What an account's base is made of before its id (and a closing `/`).
    pub fn account_prefix(&self) -> String {
        format!("{}a/", self.prefix)
    }
}

/// Keys of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountKeys {
    pub partition: Partition,
    /// `cg:{cgN}:a/<account>/`: the account hash, and the base of its other keys.
    pub base: String,
}

impl AccountKeys {
    pub fn new(namespace: &str, account: &AccountId, partitions: u32) -> AccountKeys {
        let partition = Partition::new(namespace, partition_of(account, partitions));
        let base = format!("{}{}/", partition.account_prefix(), account);
        AccountKeys { partition, base }
    }

    pub fn account(&self) -> &str {
        &self.base
    }

    pub fn hold(&self, token: &str) -> String {
        format!("{}hold:{token}", self.base)
    }
}

/// The partition of an account: FNV-1a of its id, so every replica agrees without asking.
pub fn partition_of(account: &AccountId, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in account.as_str().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_sits_where_the_scripts_look_for_it_beside_the_outbox() {
        // outbox.lua's epoch_of: the outbox key less its last six characters, then `epoch`.
        let partition = Partition::new("cg", 3);
        let outbox = partition.outbox();
        assert!(outbox.ends_with("outbox"));
        assert_eq!(
            format!("{}epoch", &outbox[..outbox.len() - 6]),
            partition.epoch()
        );
    }

    #[test]
    fn every_key_of_an_account_shares_its_partition_hash_tag() {
        let account = AccountId::parse("acme").unwrap();
        let keys = AccountKeys::new("cg", &account, 16);
        let tag = format!("{{cg{}}}", keys.partition.index);
        for key in [
            keys.account().to_owned(),
            keys.hold("r1"),
            keys.partition.outbox(),
            keys.partition.epoch(),
            keys.partition.expiries(),
            keys.partition.accounts(),
        ] {
            assert!(key.contains(&tag), "{key}");
            assert_eq!(
                key.find('{'),
                key.find(&tag),
                "the first braces are the tag: {key}"
            );
        }
    }

    #[test]
    fn no_account_id_spells_another_accounts_keys() {
        // Ids may hold ':', so a separator they cannot hold closes the account's part.
        let plain = AccountKeys::new("cg", &AccountId::parse("foo").unwrap(), 1);
        let tricky = AccountKeys::new("cg", &AccountId::parse("foo:hold:r1").unwrap(), 1);
        assert_ne!(plain.hold("r1"), tricky.account());
        assert!(!tricky.base.starts_with(&plain.base));
    }

    #[test]
    fn accounts_spread_over_partitions_stably() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let account = AccountId::parse(&format!("org-{i}")).unwrap();
            let p = partition_of(&account, 16);
            assert_eq!(p, partition_of(&account, 16));
            seen.insert(p);
        }
        assert_eq!(seen.len(), 16);
    }
}

//! The Lua scripts, one per operation, each loaded with the shared library before it. Invoked
//! with EVALSHA; the `redis` crate loads a script again when Redis answers `NOSCRIPT` (after
//! `SCRIPT FLUSH` or a restart).

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/lib.lua"),
            include_str!("lua/hold.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

/// Every script creditgate runs.
pub struct Scripts {
    pub reserve: Script,
    pub commit: Script,
    pub release: Script,
    pub extend: Script,
    pub charge: Script,
    pub check: Script,
    pub expire: Script,
    pub add_grant: Script,
    pub void_grant: Script,
    pub set_wallet: Script,
    pub set_alerts: Script,
    pub set_limit: Script,
    pub put_account: Script,
    pub hydrate: Script,
    pub replace: Script,
    pub snapshot: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            reserve: script!("reserve.lua"),
            commit: script!("commit.lua"),
            release: script!("release.lua"),
            extend: script!("extend.lua"),
            charge: script!("charge.lua"),
            check: script!("check.lua"),
            expire: script!("expire.lua"),
            add_grant: script!("add_grant.lua"),
            void_grant: script!("void_grant.lua"),
            set_wallet: script!("set_wallet.lua"),
            set_alerts: script!("set_alerts.lua"),
            set_limit: script!("set_limit.lua"),
            put_account: script!("put_account.lua"),
            hydrate: script!("hydrate.lua"),
            replace: script!("replace.lua"),
            snapshot: script!("snapshot.lua"),
        }
    }
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts::new()
    }
}

//! The Lua scripts, one function per operation, in one Redis Functions library together with
//! the code they share: [`SHARED`], the library's files by concept, in the order they are
//! loaded.
//!
//! Redis keeps a loaded library: its definitions run once, at `FUNCTION LOAD`, where a script
//! sent with `EVALSHA` ran them again on every call (under `creditgate bench --scenario
//! reserve-commit`, a call took 81 µs of Redis's time that way, 76 µs as a function). The
//! library is named by a digest of its text, so replicas of different versions can share a
//! Redis. It is loaded on first use and again whenever Redis answers that a function is
//! missing (after `FUNCTION FLUSH`, or a restart without persistence); in a Cluster, on every
//! primary.
//!
//! The scripts are written as plain scripts, with `KEYS`, `ARGV` and a `return` at the end:
//! the library gives each one its arguments under those names before it runs.

use redis::{Cmd, ToRedisArgs};
use sha2::{Digest, Sha256};

use crate::domain::entry_id;
use crate::domain::{AccountId, GrantId};

/// The code every script shares, by concept (one for one with `domain/*.rs` where there is
/// one), in the order it is loaded: each file uses only what comes before it.
const SHARED: [&str; 8] = [
    include_str!("lua/lib.lua"),
    include_str!("lua/grants.lua"),
    include_str!("lua/periods.lua"),
    include_str!("lua/limits.lua"),
    include_str!("lua/wallet.lua"),
    include_str!("lua/events.lua"),
    include_str!("lua/outbox.lua"),
    include_str!("lua/hold.lua"),
];

/// Every operation's script, by the name its function takes after the library's.
const SCRIPTS: [(&str, &str); 18] = [
    ("reserve", include_str!("lua/reserve.lua")),
    ("commit", include_str!("lua/commit.lua")),
    ("release", include_str!("lua/release.lua")),
    ("extend", include_str!("lua/extend.lua")),
    ("charge", include_str!("lua/charge.lua")),
    ("check", include_str!("lua/check.lua")),
    ("expire", include_str!("lua/expire.lua")),
    ("add_grant", include_str!("lua/add_grant.lua")),
    ("void_grant", include_str!("lua/void_grant.lua")),
    ("set_wallet", include_str!("lua/set_wallet.lua")),
    ("set_alerts", include_str!("lua/set_alerts.lua")),
    ("set_limit", include_str!("lua/set_limit.lua")),
    ("put_account", include_str!("lua/put_account.lua")),
    ("hydrate", include_str!("lua/hydrate.lua")),
    ("replace", include_str!("lua/replace.lua")),
    ("snapshot", include_str!("lua/snapshot.lua")),
    ("ack", include_str!("lua/ack.lua")),
    ("batch", include_str!("lua/batch.lua")),
];

/// The operations `lua/batch.lua` runs: those of the hot path, which may arrive together.
const BATCHED: [&str; 5] = ["reserve", "commit", "release", "extend", "charge"];

/// One operation's function.
pub struct Function {
    name: String,
    /// The operation's name when `lua/batch.lua` may run it.
    batched: Option<&'static str>,
}

impl Function {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A call of the function, to give its keys and arguments.
    pub fn prepare_invoke(&self) -> Invocation<'_> {
        Invocation {
            function: self,
            keys: Vec::new(),
            args: Vec::new(),
            partition: None,
        }
    }
}

/// A call of a [`Function`]: `FCALL name numkeys key… arg…`.
pub struct Invocation<'a> {
    function: &'a Function,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
    /// The partition of the account the call is about, when it may join a batch.
    partition: Option<u32>,
}

impl<'a> Invocation<'a> {
    /// The call may join others of `partition` in one call of `lua/batch.lua`.
    pub fn in_partition(&mut self, partition: u32) -> &mut Self {
        self.partition = Some(partition);
        self
    }

    /// The operation, its partition, keys and arguments, when the call may join a batch.
    pub fn into_batched(self) -> Result<super::call::Call, Invocation<'a>> {
        match (self.function.batched, self.partition) {
            (Some(op), Some(partition)) => Ok(super::call::Call {
                op,
                partition,
                keys: self.keys,
                args: self.args,
            }),
            _ => Err(self),
        }
    }

    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    pub fn command(&self) -> Cmd {
        let mut command = redis::cmd("FCALL");
        command.arg(&self.function.name).arg(self.keys.len());
        for key in &self.keys {
            command.arg(key.as_slice());
        }
        for arg in &self.args {
            command.arg(arg.as_slice());
        }
        command
    }
}

/// Every function creditgate calls, and the library that defines them.
pub struct Scripts {
    /// The library's source, for `FUNCTION LOAD REPLACE`.
    pub library: std::sync::Arc<str>,
    pub reserve: Function,
    pub commit: Function,
    pub release: Function,
    pub extend: Function,
    pub charge: Function,
    pub check: Function,
    pub expire: Function,
    pub add_grant: Function,
    pub void_grant: Function,
    pub set_wallet: Function,
    pub set_alerts: Function,
    pub set_limit: Function,
    pub put_account: Function,
    pub hydrate: Function,
    pub replace: Function,
    pub snapshot: Function,
    pub ack: Function,
    /// `lua/batch.lua`, which runs calls of one partition together.
    pub batch: Function,
}

impl Scripts {
    /// The library; with a `clock_key` (tests only, see
    /// [`RedisSettings::clock_key`](super::RedisSettings::clock_key)), its clock reads that key
    /// while it is set.
    pub fn new(clock_key: Option<&str>) -> Scripts {
        let mut shared = SHARED.concat();
        // After lib.lua, before the files that use them.
        let mut after_lib = entry_id_functions();
        if let Some(key) = clock_key {
            after_lib.push_str(&manual_clock(key));
        }
        shared.insert_str(SHARED[0].len(), &after_lib);
        let mut digest = Sha256::new();
        digest.update(&shared);
        for (op, script) in SCRIPTS {
            digest.update(op);
            digest.update(script);
        }
        let hex: String = digest.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let library_name = format!("creditgate_{hex}");
        // The scripts' KEYS and ARGV are locals of the library that each function sets before
        // its script runs (Redis runs one function at a time); each script is a function of
        // OPS, which the batch's script finds the operations it runs in.
        let mut library = format!(
            "#!lua name={library_name}\nlocal KEYS, ARGV\n{shared}\nlocal OPS, BATCHED = {{}}, {{}}\n"
        );
        for (op, script) in SCRIPTS {
            library.push_str(&format!("OPS.{op} = function()\n{script}\nend\n"));
        }
        for op in BATCHED {
            library.push_str(&format!("BATCHED.{op} = OPS.{op}\n"));
        }
        for (op, _) in SCRIPTS {
            library.push_str(&format!(
                "redis.register_function('{library_name}_{op}', function(keys, args)\n  \
                 KEYS, ARGV = keys, args\n  no_batch()\n  return OPS.{op}()\nend)\n"
            ));
        }
        let function = |op: &str| Function {
            name: format!("{library_name}_{op}"),
            batched: BATCHED.into_iter().find(|b| *b == op),
        };
        Scripts {
            reserve: function("reserve"),
            commit: function("commit"),
            release: function("release"),
            extend: function("extend"),
            charge: function("charge"),
            check: function("check"),
            expire: function("expire"),
            add_grant: function("add_grant"),
            void_grant: function("void_grant"),
            set_wallet: function("set_wallet"),
            set_alerts: function("set_alerts"),
            set_limit: function("set_limit"),
            put_account: function("put_account"),
            hydrate: function("hydrate"),
            replace: function("replace"),
            snapshot: function("snapshot"),
            ack: function("ack"),
            batch: function("batch"),
            library: library.into(),
        }
    }
}

/// The scripts' entry-id functions (`entry_id_repay(account, grant)` and the others), made by
/// calling [`entry_id`]'s own with a marker for each part and putting the Lua argument where the
/// marker came out: an entry id is spelled once, in Rust, for both stores.
fn entry_id_functions() -> String {
    const ACCOUNT: &str = "a0account0a";
    const GRANT: &str = "g0grant0g";
    const TOKEN: &str = "t0token0t";
    const INDEX: i64 = 777_000_777_000_777;
    let account = AccountId::parse(ACCOUNT).expect("a valid id");
    let grant = GrantId::parse(GRANT).expect("a valid id");
    let functions = [
        ("repay", "account, grant", entry_id::repay(&account, &grant)),
        (
            "void_released",
            "account, grant, token",
            entry_id::void_released(&account, &grant, TOKEN),
        ),
        (
            "lapse",
            "account, grant, index",
            entry_id::lapse(&account, &grant, INDEX),
        ),
        (
            "refill",
            "account, grant, index",
            entry_id::refill(&account, &grant, INDEX),
        ),
    ];
    let mut lua = String::new();
    for (name, parameters, id) in functions {
        let body = format!("'{id}'")
            .replace(ACCOUNT, "' .. account .. '")
            .replace(GRANT, "' .. grant .. '")
            .replace(TOKEN, "' .. token .. '")
            .replace(&INDEX.to_string(), "' .. fmt(index) .. '")
            .replace(" .. ''", "");
        lua.push_str(&format!(
            "local function entry_id_{name}({parameters})\n  return {body}\nend\n"
        ));
    }
    lua
}

/// Lua that makes the library's `now_ms` read `key` while it holds a time. It follows
/// `lib.lua`, whose local it replaces before any other file captures it.
fn manual_clock(key: &str) -> String {
    format!(
        "do\n  local server_ms = now_ms\n  now_ms = function()\n    \
         local set = redis.call('GET', '{key}')\n    \
         if set then return tonumber(set) end\n    return server_ms()\n  end\nend\n"
    )
}

/// Whether Redis answered that the called function is not loaded.
pub fn is_missing(error: &redis::RedisError) -> bool {
    error.to_string().contains("Function not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_spell_entry_ids_as_entry_id_does() {
        let lua = entry_id_functions();
        assert!(
            lua.contains(
                "local function entry_id_void_released(account, grant, token)\n  \
                 return 'void/' .. account .. '/' .. grant .. '/' .. token\nend"
            ),
            "{lua}"
        );
        assert!(
            lua.contains(
                "local function entry_id_refill(account, grant, index)\n  \
                 return 'refill/' .. account .. '/' .. grant .. '/' .. fmt(index)\nend"
            ),
            "{lua}"
        );
        assert!(!lua.contains("0a") && !lua.contains("777"), "{lua}");
    }
}

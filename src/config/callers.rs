//! The `[[callers]]` tables: who may call, checked and turned into the caller [`Policy`].

use serde::Deserialize;

use super::{ConfigError, TlsConfig};
use crate::policy::{AccountPattern, Caller, Identity, Operation, Policy};

/// A caller in the config file: one identity, the accounts and the operations it may use.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// 1–64 of `[A-Za-z0-9._-]`, unique: names the caller in logs and keeps its idempotency
    /// keys apart from other callers'.
    pub name: String,
    /// A DNS name, URI (e.g. `spiffe://cluster.local/ns/ai/sa/gateway`) or IP address among
    /// the subject alternative names of its client certificate (needs `tls.client_ca`).
    pub san: Option<String>,
    /// The SHA-256, in hex, of the token it sends as `authorization: Bearer <token>`.
    pub token_sha256: Option<String>,
    /// Account ids, or prefixes ending in `*` (`acme:*`); `"*"` is every account.
    pub accounts: Vec<String>,
    /// Operations, by their method's name in snake case (`reserve`, `get_balance`,
    /// `add_grant`, `ext_authz`, …), or the groups `gate` and `admin`. Default `["gate"]`.
    pub operations: Option<Vec<String>>,
}

impl CallerConfig {
    fn resolve(&self) -> Result<Caller, String> {
        if !Caller::name_is_valid(&self.name) {
            return Err(format!(
                "name {:?} must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'",
                self.name
            ));
        }
        let identity = match (&self.san, &self.token_sha256) {
            (Some(san), None) if !san.is_empty() => Identity::San(san.clone()),
            (None, Some(hex)) => Identity::TokenSha256(parse_sha256(hex).ok_or_else(|| {
                "token_sha256 must be 64 hex digits: the SHA-256 of the token".to_owned()
            })?),
            _ => return Err("give exactly one of san and token_sha256".into()),
        };
        if self.accounts.is_empty() {
            return Err("accounts must name at least one account, prefix* or \"*\"".into());
        }
        let accounts = self
            .accounts
            .iter()
            .map(|text| AccountPattern::parse(text).map_err(|e| format!("accounts: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let words = match &self.operations {
            Some(words) if words.is_empty() => {
                return Err("operations must name at least one operation".into());
            }
            Some(words) => words.clone(),
            None => vec!["gate".to_owned()],
        };
        let mut operations = std::collections::BTreeSet::new();
        for word in &words {
            operations.extend(Operation::named(word).ok_or_else(|| {
                format!(
                    "operations: {word:?} is not an operation (gate, admin, ext_authz, or a \
                     method such as reserve or add_grant)"
                )
            })?);
        }
        Ok(Caller {
            name: self.name.clone(),
            identity,
            accounts,
            operations,
        })
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// The caller policy of the config file's callers, whose names and identities must be unique.
pub(super) fn resolve_callers(
    configs: &[CallerConfig],
    tls: Option<&TlsConfig>,
) -> Result<Policy, ConfigError> {
    let mut callers: Vec<Caller> = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let caller = config
            .resolve()
            .map_err(|message| ConfigError::Limit(format!("callers[{i}]: {message}")))?;
        if callers.iter().any(|c| c.name == caller.name) {
            return Err(ConfigError::Limit(format!(
                "callers[{i}]: name {:?} is used twice",
                caller.name
            )));
        }
        if callers.iter().any(|c| c.identity == caller.identity) {
            return Err(ConfigError::Limit(format!(
                "callers[{i}]: another caller has the same identity"
            )));
        }
        if matches!(caller.identity, Identity::San(_))
            && tls.is_none_or(|tls| tls.client_ca.is_none())
        {
            return Err(ConfigError::Limit(format!(
                "callers[{i}].san needs mutual TLS (tls.client_ca): without it no client \
                 certificate is asked for"
            )));
        }
        callers.push(caller);
    }
    Ok(Policy::new(callers))
}

//! Who may call, and for which accounts: the caller policy.
//!
//! Each caller is known by one identity, a name in its client certificate's subject
//! alternative names (mutual TLS) or a bearer token (whose SHA-256 the config holds), and may
//! use some operations on some accounts. With no callers configured the policy is off and
//! every call is served, which suits a sidecar reachable only from its own pod; with callers,
//! a call without a known identity is refused (`UNAUTHENTICATED`), and one for an operation or
//! an account outside its caller's policy is refused (`PERMISSION_DENIED`) before anything is
//! read or changed.
//!
//! A caller's idempotency keys live in its own space ([`Principal::scope`]): the same key sent
//! by two callers is two requests.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::domain::ids::SCOPE_LEN_MAX;
use crate::domain::{AccountId, IdempotencyKey};
use crate::gate::GateError;

/// A call a policy can allow: each gRPC method that touches accounts or prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Reserve,
    Commit,
    Release,
    Extend,
    Charge,
    Check,
    GetBalance,
    WatchBalance,
    /// Envoy's `Authorization/Check`: a charge per request.
    ExtAuthz,
    PutAccount,
    GetAccount,
    AddGrant,
    VoidGrant,
    SetWallet,
    SetLimit,
    SetAlerts,
    SetPrices,
    GetPrices,
    ListEntries,
    ListEvents,
    GetUsage,
    Reconcile,
}

impl Operation {
    /// The `creditgate.v1.Gate` methods: the group `gate`.
    pub const GATE: [Operation; 8] = [
        Operation::Reserve,
        Operation::Commit,
        Operation::Release,
        Operation::Extend,
        Operation::Charge,
        Operation::Check,
        Operation::GetBalance,
        Operation::WatchBalance,
    ];

    /// The `creditgate.v1.Admin` methods: the group `admin`.
    pub const ADMIN: [Operation; 13] = [
        Operation::PutAccount,
        Operation::GetAccount,
        Operation::AddGrant,
        Operation::VoidGrant,
        Operation::SetWallet,
        Operation::SetLimit,
        Operation::SetAlerts,
        Operation::SetPrices,
        Operation::GetPrices,
        Operation::ListEntries,
        Operation::ListEvents,
        Operation::GetUsage,
        Operation::Reconcile,
    ];

    /// The name a policy gives it: the method's name in snake case.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Reserve => "reserve",
            Operation::Commit => "commit",
            Operation::Release => "release",
            Operation::Extend => "extend",
            Operation::Charge => "charge",
            Operation::Check => "check",
            Operation::GetBalance => "get_balance",
            Operation::WatchBalance => "watch_balance",
            Operation::ExtAuthz => "ext_authz",
            Operation::PutAccount => "put_account",
            Operation::GetAccount => "get_account",
            Operation::AddGrant => "add_grant",
            Operation::VoidGrant => "void_grant",
            Operation::SetWallet => "set_wallet",
            Operation::SetLimit => "set_limit",
            Operation::SetAlerts => "set_alerts",
            Operation::SetPrices => "set_prices",
            Operation::GetPrices => "get_prices",
            Operation::ListEntries => "list_entries",
            Operation::ListEvents => "list_events",
            Operation::GetUsage => "get_usage",
            Operation::Reconcile => "reconcile",
        }
    }

    /// The operations a policy's word names: one operation, or the group `gate` or `admin`.
    pub fn named(word: &str) -> Option<Vec<Operation>> {
        match word {
            "gate" => Some(Operation::GATE.to_vec()),
            "admin" => Some(Operation::ADMIN.to_vec()),
            _ => Operation::GATE
                .iter()
                .chain(&Operation::ADMIN)
                .chain(&[Operation::ExtAuthz])
                .find(|op| op.name() == word)
                .map(|op| vec![*op]),
        }
    }

    fn is_admin(self) -> bool {
        Operation::ADMIN.contains(&self)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Accounts a caller may touch: one account, or every account whose id starts with a prefix
/// (`acme:*`; `*` alone is every account).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountPattern {
    Exact(AccountId),
    Prefix(String),
}

impl AccountPattern {
    pub fn parse(text: &str) -> Result<AccountPattern, String> {
        match text.strip_suffix('*') {
            Some(prefix) => {
                // The prefix must be the start of some valid id (or nothing).
                if !prefix.is_empty() {
                    AccountId::parse(prefix).map_err(|e| format!("{text:?}: the prefix {e}"))?;
                }
                Ok(AccountPattern::Prefix(prefix.to_owned()))
            }
            None => AccountId::parse(text)
                .map(AccountPattern::Exact)
                .map_err(|e| format!("{text:?} {e} (end a prefix with *)")),
        }
    }

    fn covers(&self, account: &AccountId) -> bool {
        match self {
            AccountPattern::Exact(id) => id == account,
            AccountPattern::Prefix(prefix) => account.as_str().starts_with(prefix.as_str()),
        }
    }

    fn covers_all(&self) -> bool {
        matches!(self, AccountPattern::Prefix(prefix) if prefix.is_empty())
    }
}

/// How a caller proves who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A DNS name, URI (e.g. a SPIFFE id) or IP address among the subject alternative names of
    /// its client certificate.
    San(String),
    /// The SHA-256 of the token it sends as `authorization: Bearer <token>`.
    TokenSha256([u8; 32]),
}

/// One caller and what it may do.
#[derive(Clone, Debug)]
pub struct Caller {
    /// 1–64 of `[A-Za-z0-9._-]`: names it in logs and scopes its idempotency keys.
    pub name: String,
    pub identity: Identity,
    pub accounts: Vec<AccountPattern>,
    pub operations: BTreeSet<Operation>,
}

impl Caller {
    /// Whether its name can scope idempotency keys and stand in logs.
    pub fn name_is_valid(name: &str) -> bool {
        (1..=SCOPE_LEN_MAX).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }

    /// Whether it may use an admin operation.
    pub fn is_admin(&self) -> bool {
        self.operations.iter().any(|op| op.is_admin())
    }
}

/// The callers, looked up by identity.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    by_san: HashMap<String, Arc<Caller>>,
    by_token: HashMap<[u8; 32], Arc<Caller>>,
}

/// What a call presented to prove who sent it.
#[derive(Debug, Default)]
pub struct Credentials<'a> {
    /// Subject alternative names of the client certificate, if there was one.
    pub sans: Vec<String>,
    /// The `authorization` metadata, if any.
    pub authorization: Option<&'a str>,
}

impl Policy {
    /// A policy of these callers, whose names and identities must be unique (the config
    /// checks; a repeated identity here keeps the first).
    pub fn new(callers: Vec<Caller>) -> Policy {
        let mut policy = Policy::default();
        for caller in callers {
            let caller = Arc::new(caller);
            match &caller.identity {
                Identity::San(san) => {
                    policy.by_san.entry(san.clone()).or_insert(caller);
                }
                Identity::TokenSha256(hash) => {
                    policy.by_token.entry(*hash).or_insert(caller);
                }
            }
        }
        policy
    }

    /// Whether any caller is configured; if not, every call is served.
    pub fn is_on(&self) -> bool {
        !self.by_san.is_empty() || !self.by_token.is_empty()
    }

    /// Who sent a call for `operation`, if the policy knows the sender and lets it use the
    /// operation.
    pub fn authorize(
        &self,
        credentials: &Credentials<'_>,
        operation: Operation,
    ) -> Result<Principal, GateError> {
        if !self.is_on() {
            return Ok(Principal(None));
        }
        let by_token = match credentials.authorization {
            None => None,
            Some(value) => {
                let token = bearer(value).ok_or_else(|| {
                    GateError::Unauthenticated(
                        "authorization: must be \"Bearer <token>\"".to_owned(),
                    )
                })?;
                let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                Some(self.by_token.get(&hash).ok_or_else(|| {
                    GateError::Unauthenticated("authorization: unknown bearer token".to_owned())
                })?)
            }
        };
        let by_san = credentials
            .sans
            .iter()
            .find_map(|san| self.by_san.get(san.as_str()));
        let caller = match (by_san, by_token) {
            (Some(a), Some(b)) if a.name != b.name => {
                return Err(GateError::Unauthenticated(format!(
                    "the client certificate names caller {:?} but the bearer token {:?}",
                    a.name, b.name
                )));
            }
            (Some(caller), _) | (None, Some(caller)) => caller,
            (None, None) if credentials.sans.is_empty() => {
                return Err(GateError::Unauthenticated(
                    "no caller identity: present a client certificate or a bearer token".to_owned(),
                ));
            }
            (None, None) => {
                return Err(GateError::Unauthenticated(format!(
                    "no caller has any of the client certificate's names {:?}",
                    credentials.sans
                )));
            }
        };
        if !caller.operations.contains(&operation) {
            return Err(GateError::PermissionDenied(format!(
                "caller {:?} may not use {operation}{}",
                caller.name,
                if operation.is_admin() && !caller.is_admin() {
                    " (an admin operation)"
                } else {
                    ""
                }
            )));
        }
        Ok(Principal(Some(caller.clone())))
    }
}

/// The token of an `authorization: Bearer <token>` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Who a call is from: a caller of the policy, or anyone when the policy is off.
#[derive(Clone, Debug)]
pub struct Principal(Option<Arc<Caller>>);

impl Principal {
    /// Anyone: the principal of every call when the policy is off.
    pub fn anyone() -> Principal {
        Principal(None)
    }

    /// The caller's name, if the policy is on.
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref().map(|caller| caller.name.as_str())
    }

    /// Refuses an account outside the caller's policy.
    pub fn may_touch(&self, account: &AccountId) -> Result<(), GateError> {
        match &self.0 {
            Some(caller) if !caller.accounts.iter().any(|p| p.covers(account)) => {
                Err(GateError::PermissionDenied(format!(
                    "caller {:?} may not touch account {account:?}",
                    caller.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// Refuses a call about every account (a listing, a reconcile of all) unless the caller
    /// may touch every account.
    pub fn may_touch_all(&self) -> Result<(), GateError> {
        match &self.0 {
            Some(caller) if !caller.accounts.iter().any(AccountPattern::covers_all) => {
                Err(GateError::PermissionDenied(format!(
                    "caller {:?} may not touch every account; name one",
                    caller.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// The key in the caller's own space.
    pub fn scope(&self, key: Option<IdempotencyKey>) -> Option<IdempotencyKey> {
        match &self.0 {
            Some(caller) => key.map(|key| key.scoped(&caller.name)),
            None => key,
        }
    }
}

/// The DNS names, URIs and IP addresses a DER certificate is issued for.
pub fn subject_alt_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => {
                    Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string())
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, identity: Identity, accounts: &[&str], ops: &[&str]) -> Caller {
        Caller {
            name: name.to_owned(),
            identity,
            accounts: accounts
                .iter()
                .map(|a| AccountPattern::parse(a).unwrap())
                .collect(),
            operations: ops
                .iter()
                .flat_map(|w| Operation::named(w).unwrap())
                .collect(),
        }
    }

    fn token(text: &str) -> Identity {
        Identity::TokenSha256(Sha256::digest(text.as_bytes()).into())
    }

    fn policy() -> Policy {
        Policy::new(vec![
            caller("gateway", token("t-gw"), &["acme:*", "solo"], &["gate"]),
            caller(
                "ops",
                Identity::San("ops.example.com".into()),
                &["*"],
                &["gate", "admin"],
            ),
        ])
    }

    fn with_token(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn policy_off_lets_anyone_touch_anything() {
        let principal = Policy::default()
            .authorize(&Credentials::default(), Operation::SetPrices)
            .unwrap();
        assert_eq!(principal.name(), None);
        principal
            .may_touch(&AccountId::parse("anyone").unwrap())
            .unwrap();
        let key = IdempotencyKey::parse("k").unwrap();
        assert_eq!(principal.scope(Some(key.clone())), Some(key));
    }

    #[test]
    fn a_token_caller_is_held_to_its_accounts_and_operations() {
        let policy = policy();
        let auth = with_token("t-gw");
        let credentials = Credentials {
            sans: vec![],
            authorization: Some(&auth),
        };
        let principal = policy.authorize(&credentials, Operation::Reserve).unwrap();
        assert_eq!(principal.name(), Some("gateway"));
        for ok in ["acme:1", "acme:", "solo"] {
            principal.may_touch(&AccountId::parse(ok).unwrap()).unwrap();
        }
        for refused in ["solo2", "acme", "other"] {
            let error = principal
                .may_touch(&AccountId::parse(refused).unwrap())
                .unwrap_err();
            assert!(
                matches!(&error, GateError::PermissionDenied(m) if m.contains(refused)),
                "{error}"
            );
        }
        assert!(principal.may_touch_all().is_err());
        let error = policy
            .authorize(&credentials, Operation::AddGrant)
            .unwrap_err();
        assert!(
            matches!(&error, GateError::PermissionDenied(m) if m.contains("add_grant") && m.contains("admin")),
            "{error}"
        );
        assert!(policy.authorize(&credentials, Operation::ExtAuthz).is_err());
        let key = IdempotencyKey::parse("k/1").unwrap();
        assert_eq!(
            principal.scope(Some(key)).unwrap().as_str(),
            "gateway/k/1",
            "a key is scoped by its caller's name"
        );
    }

    #[test]
    fn a_certificate_caller_is_found_by_any_of_its_names() {
        let policy = policy();
        let credentials = Credentials {
            sans: vec!["other.example.com".into(), "ops.example.com".into()],
            authorization: None,
        };
        let principal = policy
            .authorize(&credentials, Operation::SetPrices)
            .unwrap();
        assert_eq!(principal.name(), Some("ops"));
        principal.may_touch_all().unwrap();
    }

    #[test]
    fn unknown_missing_and_conflicting_identities_are_unauthenticated() {
        let policy = policy();
        let wrong = with_token("nope");
        let gateway = with_token("t-gw");
        let cases = [
            (vec![], None, "no caller identity"),
            (vec![], Some(wrong.as_str()), "unknown bearer token"),
            (vec![], Some("Basic dXNlcg=="), "Bearer <token>"),
            (vec!["x.example.com".to_owned()], None, "x.example.com"),
            (
                vec!["ops.example.com".to_owned()],
                Some(gateway.as_str()),
                "names caller",
            ),
        ];
        for (sans, authorization, said) in cases {
            let credentials = Credentials {
                sans,
                authorization,
            };
            let error = policy
                .authorize(&credentials, Operation::Check)
                .unwrap_err();
            assert!(
                matches!(&error, GateError::Unauthenticated(m) if m.contains(said)),
                "{error} should say {said:?}"
            );
        }
    }

    #[test]
    fn account_patterns_are_checked() {
        assert_eq!(
            AccountPattern::parse("*").unwrap(),
            AccountPattern::Prefix(String::new())
        );
        assert!(AccountPattern::parse("a b").is_err());
        assert!(AccountPattern::parse("a/*").is_err());
        assert!(AccountPattern::parse("").is_err());
        assert!(Operation::named("gates").is_none());
        assert_eq!(
            Operation::named("ext_authz"),
            Some(vec![Operation::ExtAuthz])
        );
    }
}

//! Validated identifiers: accounts, wallets, features, grants, models, reservations,
//! idempotency keys and labels.
//!
//! Each is checked once, where it enters, so the rest of the code can rely on its shape (and the
//! Redis store can put it into a key without escaping).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest account, wallet, feature, grant or model id, in bytes.
pub const ID_LEN_MAX: usize = 128;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
/// Longest scope an idempotency key is put in (a caller's name), in bytes.
pub const SCOPE_LEN_MAX: usize = 64;
/// Longest idempotency key as kept: a key in its caller's scope, or an Envoy request id with
/// its prefix.
pub const IDEMPOTENCY_KEY_STORED_LEN_MAX: usize = 512;
/// Most labels on one request.
pub const LABELS_LEN_MAX: usize = 16;
/// Longest label key, in bytes.
pub const LABEL_KEY_LEN_MAX: usize = 64;
/// Longest label value, in bytes.
pub const LABEL_VALUE_LEN_MAX: usize = 256;

/// Why an identifier was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("may contain only {allowed}")]
    Charset { allowed: &'static str },
    #[error("must look like \"<account_id>/<token>\"")]
    Reservation,
    #[error("has more than {max} entries")]
    TooMany { max: usize },
}

const ID_CHARSET: &str = "letters, digits and . _ : @ -";

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-')
}

fn check_id(text: &str) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty);
    }
    if text.len() > ID_LEN_MAX {
        return Err(IdError::TooLong { max: ID_LEN_MAX });
    }
    if !text.bytes().all(is_id_byte) {
        return Err(IdError::Charset {
            allowed: ID_CHARSET,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        id_type!($(#[$doc])* $name, check_id);
    };
    ($(#[$doc:meta])* $name:ident, $stored_check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `text`: 1–128 bytes of `[A-Za-z0-9._:@-]`.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                check_id(text)?;
                Ok(Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(text: String) -> Result<Self, IdError> {
                $stored_check(&text)?;
                Ok(Self(text))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// Who pays: an organisation, workspace or user.
    AccountId
);
id_type!(
    /// A named balance inside an account.
    WalletId
);
id_type!(
    /// What is being paid for, e.g. `chat.completions`.
    FeatureId
);
id_type!(
    /// A lot of credits, named by whoever granted it (often a payment id).
    ///
    /// Splits also name two sources that are not grants, with ids no grant can have:
    /// [`GrantId::flex`] and [`GrantId::debt`].
    GrantId,
    check_stored_grant_id
);

/// A grant id as stores and the ledger keep it: a grant's own id or a pseudo-grant's.
fn check_stored_grant_id(text: &str) -> Result<(), IdError> {
    if text == GrantId::FLEX || text == GrantId::DEBT {
        return Ok(());
    }
    check_id(text)
}

impl GrantId {
    /// The source of a portion paid by flex (postpaid spending up to the wallet's cap).
    pub const FLEX: &str = "~flex";
    /// The source of a portion charged beyond everything the wallet could pay: an overrun
    /// charged in full. The next credit added to the wallet pays it.
    pub const DEBT: &str = "~debt";

    pub fn flex() -> GrantId {
        GrantId(GrantId::FLEX.to_owned())
    }

    pub fn debt() -> GrantId {
        GrantId(GrantId::DEBT.to_owned())
    }

    /// Whether this names a real grant, not flex or debt.
    pub fn is_grant(&self) -> bool {
        !self.0.starts_with('~')
    }

    /// Checks an id read back from a store or the ledger, which may be a pseudo-grant's.
    pub fn parse_stored(text: &str) -> Result<GrantId, IdError> {
        check_stored_grant_id(text)?;
        Ok(GrantId(text.to_owned()))
    }
}

impl WalletId {
    /// The wallet every account has.
    pub fn default_wallet() -> WalletId {
        WalletId("default".to_owned())
    }
}

/// A model name in a per-token price: printable ASCII without spaces, 1–128 bytes
/// (`gpt-4o-mini`, `meta-llama/Llama-3-70b`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelId(String);

impl ModelId {
    pub fn parse(text: &str) -> Result<ModelId, IdError> {
        check_printable(text, ID_LEN_MAX)?;
        Ok(ModelId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelId {
    type Error = IdError;
    fn try_from(text: String) -> Result<Self, IdError> {
        check_printable(&text, ID_LEN_MAX)?;
        Ok(ModelId(text))
    }
}

impl From<ModelId> for String {
    fn from(id: ModelId) -> String {
        id.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_printable(text: &str, max: usize) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty);
    }
    if text.len() > max {
        return Err(IdError::TooLong { max });
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdError::Charset {
            allowed: "printable ASCII without spaces",
        });
    }
    Ok(())
}

/// A caller's key that makes a mutating call safe to retry: printable ASCII, 1–255 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<IdempotencyKey, IdError> {
        check_printable(text, IDEMPOTENCY_KEY_LEN_MAX)?;
        Ok(IdempotencyKey(text.to_owned()))
    }

    /// A key as the store and the ledger keep it, which may carry its caller's scope (up to
    /// [`IDEMPOTENCY_KEY_STORED_LEN_MAX`] bytes).
    pub fn parse_stored(text: &str) -> Result<IdempotencyKey, IdError> {
        check_printable(text, IDEMPOTENCY_KEY_STORED_LEN_MAX)?;
        Ok(IdempotencyKey(text.to_owned()))
    }

    /// This key in `scope`'s own space, `<scope>/<key>`: two callers using the same key do
    /// not get each other's answers. `scope` is a caller's name, which has no `/`.
    pub fn scoped(&self, scope: &str) -> IdempotencyKey {
        debug_assert!(!scope.contains('/') && scope.len() <= SCOPE_LEN_MAX);
        IdempotencyKey(format!("{scope}/{}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A hold's id, `<account_id>/<token>`: it names its account, so any replica can find the hold
/// from the id alone, and the store can keep it beside the account's balance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReservationId {
    account: AccountId,
    token: String,
}

/// Longest token part of a reservation id.
const RESERVATION_TOKEN_LEN_MAX: usize = 64;

impl ReservationId {
    /// A new id with a token that cannot be guessed (74 random bits) and sorts by when it was
    /// made (a UUIDv7): the ledger's index of holds grows at its end, not at random places.
    pub fn generate(account: &AccountId) -> ReservationId {
        ReservationId {
            account: account.clone(),
            token: format!("r{}", uuid::Uuid::now_v7().simple()),
        }
    }

    pub fn parse(text: &str) -> Result<ReservationId, IdError> {
        if text.is_empty() {
            return Err(IdError::Empty);
        }
        let (account, token) = text.rsplit_once('/').ok_or(IdError::Reservation)?;
        let token_ok = !token.is_empty()
            && token.len() <= RESERVATION_TOKEN_LEN_MAX
            && token.bytes().all(|b| b.is_ascii_alphanumeric());
        if !token_ok {
            return Err(IdError::Reservation);
        }
        let account = AccountId::parse(account).map_err(|_| IdError::Reservation)?;
        Ok(ReservationId {
            account,
            token: token.to_owned(),
        })
    }

    pub fn account(&self) -> &AccountId {
        &self.account
    }

    pub fn token(&self) -> &str {
        &self.token
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.token)
    }
}

/// Free-form attribution kept with a charge: `project=atlas`, `task=42`, `user=ana`.
pub type Labels = BTreeMap<String, String>;

/// Checks labels: at most 16; keys like ids, up to 64 bytes; values up to 256 bytes of text
/// without control characters.
pub fn check_labels<'a>(
    labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<Labels, (String, IdError)> {
    if labels.len() > LABELS_LEN_MAX {
        return Err((
            String::new(),
            IdError::TooMany {
                max: LABELS_LEN_MAX,
            },
        ));
    }
    let mut checked = Labels::new();
    for (key, value) in labels {
        check_id(key).map_err(|e| (key.clone(), e))?;
        if key.len() > LABEL_KEY_LEN_MAX {
            return Err((
                key.clone(),
                IdError::TooLong {
                    max: LABEL_KEY_LEN_MAX,
                },
            ));
        }
        if value.len() > LABEL_VALUE_LEN_MAX {
            return Err((
                key.clone(),
                IdError::TooLong {
                    max: LABEL_VALUE_LEN_MAX,
                },
            ));
        }
        if value.chars().any(char::is_control) {
            return Err((
                key.clone(),
                IdError::Charset {
                    allowed: "text without control characters",
                },
            ));
        }
        checked.insert(key.clone(), value.clone());
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_charset() {
        for text in ["acme", "org_1", "a.b:c@d-e", &"x".repeat(128)] {
            assert!(AccountId::parse(text).is_ok(), "{text}");
        }
        assert_eq!(AccountId::parse(""), Err(IdError::Empty));
        assert_eq!(
            AccountId::parse(&"x".repeat(129)),
            Err(IdError::TooLong { max: 128 })
        );
        for text in ["a b", "a/b", "é", "a\n", "{a}"] {
            assert!(
                matches!(AccountId::parse(text), Err(IdError::Charset { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn only_stores_may_name_flex_and_debt() {
        assert!(GrantId::parse(GrantId::FLEX).is_err());
        assert!(GrantId::parse(GrantId::DEBT).is_err());
        assert_eq!(GrantId::parse_stored("~flex"), Ok(GrantId::flex()));
        assert!(GrantId::parse_stored("~other").is_err());
        let read: GrantId = serde_json::from_str("\"~debt\"").unwrap();
        assert!(!read.is_grant());
        assert!(GrantId::parse("plan").unwrap().is_grant());
    }

    #[test]
    fn reservation_ids_name_their_account() {
        let account = AccountId::parse("acme").unwrap();
        let id = ReservationId::generate(&account);
        let parsed = ReservationId::parse(&id.to_string()).unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.account(), &account);
        for text in ["acme", "acme/", "/r1", "acme/r-1", "a b/r1", "acme/r1/"] {
            assert!(ReservationId::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn idempotency_keys_are_printable_and_bounded() {
        assert!(IdempotencyKey::parse("req-42/retry#1").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("with space").is_err());
    }

    #[test]
    fn labels_are_bounded() {
        let ok: Labels = [("project".to_owned(), "atlas v2".to_owned())].into();
        assert_eq!(check_labels(ok.iter()).unwrap(), ok);
        let bad_key: Labels = [("pro ject".to_owned(), "x".to_owned())].into();
        assert_eq!(check_labels(bad_key.iter()).unwrap_err().0, "pro ject");
        let too_many: Labels = (0..17).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_labels(too_many.iter()).is_err());
        let control: Labels = [("k".to_owned(), "a\u{7}".to_owned())].into();
        assert!(check_labels(control.iter()).is_err());
    }
}

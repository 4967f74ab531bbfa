//! The `[[webhooks]]` tables: endpoints events are posted to, checked and turned into
//! [`Webhook`]s.

use serde::Deserialize;

use super::ConfigError;
use crate::events::WalletEventKind;
use crate::webhooks::Webhook;

/// A webhook endpoint in the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the endpoint in delivery listings: 1–64 of `[A-Za-z0-9._-]`, unique.
    pub name: String,
    /// `http://host[:port]/path`.
    pub url: String,
    /// Key of the HMAC-SHA256 signature of each request, at least 16 bytes.
    pub secret: String,
    /// Kinds of event sent: `depleted`, `replenished`, `hold_expired`, `low_balance`,
    /// `alert`, `limit_reached`, `top_up_requested`. Default: every kind.
    #[serde(default)]
    pub events: Vec<String>,
}

impl WebhookConfig {
    fn resolve(&self) -> Result<Webhook, String> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(format!(
                "name {:?} must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'",
                self.name
            ));
        }
        let url: hyper::Uri = self
            .url
            .parse()
            .map_err(|e| format!("url {:?}: {e}", self.url))?;
        match url.scheme_str() {
            Some("http") if url.host().is_some() => {}
            Some("https") => {
                return Err(format!(
                    "url {:?}: https endpoints are not supported yet; reach them through a \
                     local proxy or a mesh sidecar that adds TLS",
                    self.url
                ));
            }
            _ => {
                return Err(format!(
                    "url {:?} must look like http://host/path",
                    self.url
                ));
            }
        }
        if self.secret.len() < 16 {
            return Err("secret must be at least 16 bytes".into());
        }
        let kinds = self
            .events
            .iter()
            .map(|kind| {
                WalletEventKind::parse(kind).ok_or_else(|| {
                    let known: Vec<&str> =
                        WalletEventKind::ALL.iter().map(|k| k.as_str()).collect();
                    format!("unknown event {kind:?} (events are {})", known.join(", "))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Webhook {
            name: self.name.clone(),
            url,
            secret: self.secret.clone(),
            kinds,
        })
    }
}

pub(super) fn resolve_webhooks(configs: &[WebhookConfig]) -> Result<Vec<Webhook>, ConfigError> {
    let mut webhooks: Vec<Webhook> = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let webhook = config
            .resolve()
            .map_err(|message| ConfigError::Limit(format!("webhooks[{i}]: {message}")))?;
        if webhooks.iter().any(|w| w.name == webhook.name) {
            return Err(ConfigError::Limit(format!(
                "webhooks[{i}]: name {:?} is used twice",
                webhook.name
            )));
        }
        webhooks.push(webhook);
    }
    Ok(webhooks)
}

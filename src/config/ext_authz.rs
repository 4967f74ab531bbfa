//! The `[ext_authz]` table: where Envoy's external authorization requests carry the account,
//! feature, units and request id, checked and turned into [`ExtAuthzSettings`].

use serde::Deserialize;

use super::ConfigError;
use crate::api::ext_authz::ExtAuthzSettings;
use crate::domain::FeatureId;

/// The `[ext_authz]` table: request headers Envoy forwards, as Envoy writes them (lower case).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzConfig {
    /// Header naming the account. Default `x-creditgate-account`.
    pub account_header: Option<String>,
    /// The account from Envoy's dynamic metadata instead, tried first: the filter's name, then
    /// the keys, separated by `/`, e.g. `envoy.filters.http.jwt_authn/jwt_payload/org_id`.
    /// Default: none.
    pub account_metadata: Option<String>,
    /// Header naming the feature. Default `x-creditgate-feature`.
    pub feature_header: Option<String>,
    /// Feature of requests that name none. Default: none (the header is required).
    pub feature: Option<FeatureId>,
    /// Header with the units of a per-unit price; absent means one. Default
    /// `x-creditgate-units`.
    pub units_header: Option<String>,
    /// Header identifying a request across Envoy's retries, so that a retried check is the
    /// same charge. Default `x-request-id`.
    pub request_id_header: Option<String>,
}

impl ExtAuthzConfig {
    pub(super) fn resolve(&self) -> Result<ExtAuthzSettings, ConfigError> {
        let defaults = ExtAuthzSettings::default();
        let header = |name: &str, given: &Option<String>, default: String| match given {
            None => Ok(default),
            Some(h)
                if !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Ok(h.clone())
            }
            Some(h) => Err(ConfigError::Limit(format!(
                "ext_authz.{name} {h:?} must be a header name in lower case"
            ))),
        };
        let account_metadata = match &self.account_metadata {
            None => None,
            Some(text) => {
                let mut parts = text.split('/').map(str::to_owned);
                let filter = parts.next().unwrap_or_default();
                let path: Vec<String> = parts.collect();
                if filter.is_empty() || path.is_empty() || path.iter().any(String::is_empty) {
                    return Err(ConfigError::Limit(format!(
                        "ext_authz.account_metadata {text:?} must look like filter/key[/key...]"
                    )));
                }
                Some((filter, path))
            }
        };
        Ok(ExtAuthzSettings {
            account_header: header(
                "account_header",
                &self.account_header,
                defaults.account_header,
            )?,
            account_metadata,
            feature_header: header(
                "feature_header",
                &self.feature_header,
                defaults.feature_header,
            )?,
            feature_default: self.feature.clone(),
            units_header: header("units_header", &self.units_header, defaults.units_header)?,
            request_id_header: header(
                "request_id_header",
                &self.request_id_header,
                defaults.request_id_header,
            )?,
        })
    }
}

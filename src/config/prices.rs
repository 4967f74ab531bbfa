//! The `[[prices]]` tables: one feature's price each, written to the ledger at start.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::domain::{
    Amount, FeatureId, FeaturePrice, ModelId, OverrunPolicy, PriceRule, StopRule, TokenPrice,
    WalletId,
};

/// One feature's price in the config file: exactly one of `per_call`, `per_unit` and
/// `per_million_tokens`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub feature: FeatureId,
    /// Wallet that pays for the feature. Default `default`.
    pub wallet: Option<WalletId>,
    /// Flat price per call, e.g. `"0.002"`.
    pub per_call: Option<Amount>,
    /// Price per unit, e.g. `{ unit = "minute", price = "0.05" }`.
    pub per_unit: Option<PerUnitConfig>,
    /// Prices per 1M tokens by model, e.g. `{ "gpt-x" = { input = "3.00", output = "15.00" } }`.
    pub per_million_tokens: Option<BTreeMap<ModelId, TokenPrice>>,
    /// What a commit larger than its hold is charged: `cap_at_hold` (the default),
    /// `allow_up_to` (with `overrun_allowance`) or `charge_actual`.
    pub overrun: Option<String>,
    /// With `overrun = "allow_up_to"`: how much beyond the hold may be charged.
    pub overrun_allowance: Option<Amount>,
    /// What happens to holds still running when the wallet runs out: `finish_running`
    /// (default) or `stop_running`.
    pub stop: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerUnitConfig {
    pub unit: String,
    pub price: Amount,
}

impl PriceConfig {
    pub(super) fn rule(&self) -> Result<PriceRule, String> {
        match (&self.per_call, &self.per_unit, &self.per_million_tokens) {
            (Some(price), None, None) => Ok(PriceRule::PerCall { price: *price }),
            (None, Some(p), None) => {
                if p.unit.is_empty()
                    || !p
                        .unit
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err("per_unit.unit must be letters, digits or _".into());
                }
                Ok(PriceRule::PerUnit {
                    unit: p.unit.clone(),
                    price: p.price,
                })
            }
            (None, None, Some(models)) if !models.is_empty() => Ok(PriceRule::PerMillionTokens {
                models: models.clone(),
            }),
            _ => Err("give exactly one of per_call, per_unit or per_million_tokens".into()),
        }
    }

    pub(super) fn overrun(&self) -> Result<OverrunPolicy, String> {
        match (self.overrun.as_deref(), self.overrun_allowance) {
            (None | Some("cap_at_hold"), None) => Ok(OverrunPolicy::CapAtHold),
            (Some("charge_actual"), None) => Ok(OverrunPolicy::ChargeActual),
            (Some("allow_up_to"), Some(allowance)) => Ok(OverrunPolicy::AllowUpTo {
                allowance_minor: allowance.to_minor(),
            }),
            (Some("allow_up_to"), None) => {
                Err("overrun = \"allow_up_to\" needs overrun_allowance".into())
            }
            (Some("cap_at_hold" | "charge_actual") | None, Some(_)) => {
                Err("overrun_allowance goes only with overrun = \"allow_up_to\"".into())
            }
            (Some(other), _) => Err(format!(
                "overrun must be cap_at_hold, allow_up_to or charge_actual, not {other:?}"
            )),
        }
    }

    pub(super) fn stop(&self) -> Result<StopRule, String> {
        match self.stop.as_deref() {
            None => Ok(StopRule::default()),
            Some(text) => StopRule::parse(text).ok_or_else(|| {
                format!("stop must be finish_running or stop_running, not {text:?}")
            }),
        }
    }

    pub fn to_feature_price(&self) -> FeaturePrice {
        FeaturePrice {
            feature: self.feature.clone(),
            wallet: self.wallet.clone().unwrap_or_else(WalletId::default_wallet),
            rule: self.rule().expect("checked when the file was loaded"),
            overrun: self.overrun().expect("checked when the file was loaded"),
            stop: self.stop().expect("checked when the file was loaded"),
            effective_at_ms: 0,
        }
    }
}

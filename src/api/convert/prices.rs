//! Prices: a SetPrices request's features checked field by field, and the catalog back.

use super::{amount, money, optional, required};
use crate::domain::{
    Amount, FeatureId, FeaturePrice, ModelId, OverrunPolicy, PriceRule, StopRule, TokenPrice,
    WalletId,
};
use crate::gate::GateError;
use crate::proto;

/// Longest unit name in a per-unit price.
const UNIT_LEN_MAX: usize = 32;

/// A SetPrices request's `features[index]` as a price; every field is checked and named.
///
/// Long, but one check after another in the message's order (the rule, each model of a
/// per-token price, the overrun policy, the stop rule), each naming its field.
pub fn feature_price(index: usize, price: &proto::FeaturePrice) -> Result<FeaturePrice, GateError> {
    use proto::feature_price::Rule;
    let at = |field: &str| format!("features[{index}].{field}");
    let rule = match &price.rule {
        Some(Rule::PerCall(p)) => PriceRule::PerCall {
            price: amount(&at("per_call.price"), &p.price)?,
        },
        Some(Rule::PerUnit(p)) => {
            let unit_ok = !p.unit.is_empty()
                && p.unit.len() <= UNIT_LEN_MAX
                && p.unit
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !unit_ok {
                return Err(GateError::invalid(
                    at("per_unit.unit"),
                    format!("must be 1-{UNIT_LEN_MAX} letters, digits or _ (e.g. \"minute\")"),
                ));
            }
            PriceRule::PerUnit {
                unit: p.unit.clone(),
                price: amount(&at("per_unit.price"), &p.price)?,
            }
        }
        Some(Rule::PerMillionTokens(p)) => {
            if p.models.is_empty() {
                return Err(GateError::invalid(
                    at("per_million_tokens.models"),
                    "at least one model is required",
                ));
            }
            if p.models.len() > crate::domain::price::MODELS_PER_PRICE_MAX {
                return Err(GateError::invalid(
                    at("per_million_tokens.models"),
                    format!(
                        "at most {} models",
                        crate::domain::price::MODELS_PER_PRICE_MAX
                    ),
                ));
            }
            let mut models = std::collections::BTreeMap::new();
            for (m, model) in p.models.iter().enumerate() {
                let field = |name: &str| at(&format!("per_million_tokens.models[{m}].{name}"));
                let id = required(&field("model"), &model.model, ModelId::parse)?;
                let price = TokenPrice {
                    input: amount(&field("input"), &model.input)?,
                    output: amount(&field("output"), &model.output)?,
                    cached_input: optional(
                        &field("cached_input"),
                        &model.cached_input,
                        Amount::parse,
                    )?,
                };
                if models.insert(id.clone(), price).is_some() {
                    return Err(GateError::invalid(
                        field("model"),
                        format!("model {id} is listed twice"),
                    ));
                }
            }
            PriceRule::PerMillionTokens { models }
        }
        None => {
            return Err(GateError::invalid(
                at("rule"),
                "one of per_call, per_unit or per_million_tokens is required",
            ));
        }
    };
    let allowance = optional(
        &at("overrun_allowance"),
        &price.overrun_allowance,
        Amount::parse,
    )?;
    let overrun = match (proto::Overrun::try_from(price.overrun), allowance) {
        (Err(_), _) => {
            return Err(GateError::invalid(
                at("overrun"),
                format!("unknown overrun policy {}", price.overrun),
            ));
        }
        (Ok(proto::Overrun::AllowUpTo), Some(allowance)) => OverrunPolicy::AllowUpTo {
            allowance_minor: allowance.to_minor(),
        },
        (Ok(proto::Overrun::AllowUpTo), None) => {
            return Err(GateError::invalid(
                at("overrun_allowance"),
                "required with OVERRUN_ALLOW_UP_TO",
            ));
        }
        (_, Some(_)) => {
            return Err(GateError::invalid(
                at("overrun_allowance"),
                "only OVERRUN_ALLOW_UP_TO takes an allowance",
            ));
        }
        (Ok(proto::Overrun::Unspecified | proto::Overrun::CapAtHold), None) => {
            OverrunPolicy::CapAtHold
        }
        (Ok(proto::Overrun::ChargeActual), None) => OverrunPolicy::ChargeActual,
    };
    let stop = match proto::StopRule::try_from(price.stop) {
        Ok(proto::StopRule::Unspecified | proto::StopRule::FinishRunning) => {
            StopRule::FinishRunning
        }
        Ok(proto::StopRule::StopRunning) => StopRule::StopRunning,
        Err(_) => {
            return Err(GateError::invalid(
                at("stop"),
                format!("unknown stop rule {}", price.stop),
            ));
        }
    };
    Ok(FeaturePrice {
        feature: required(&at("feature"), &price.feature, FeatureId::parse)?,
        wallet: optional(&at("wallet"), &price.wallet, WalletId::parse)?
            .unwrap_or_else(WalletId::default_wallet),
        rule,
        overrun,
        stop,
        effective_at_ms: price.effective_at_ms,
    })
}

pub fn feature_price_to_proto(price: &FeaturePrice) -> proto::FeaturePrice {
    use proto::feature_price::Rule;
    let rule = match &price.rule {
        PriceRule::PerCall { price } => Rule::PerCall(proto::PerCallPrice {
            price: price.to_string(),
        }),
        PriceRule::PerUnit { unit, price } => Rule::PerUnit(proto::PerUnitPrice {
            unit: unit.clone(),
            price: price.to_string(),
        }),
        PriceRule::PerMillionTokens { models } => {
            Rule::PerMillionTokens(proto::PerMillionTokensPrice {
                models: models
                    .iter()
                    .map(|(model, price)| proto::ModelPrice {
                        model: model.to_string(),
                        input: price.input.to_string(),
                        output: price.output.to_string(),
                        cached_input: price
                            .cached_input
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
        }
    };
    let (overrun, overrun_allowance) = match price.overrun {
        OverrunPolicy::CapAtHold => (proto::Overrun::CapAtHold, String::new()),
        OverrunPolicy::AllowUpTo { allowance_minor } => {
            (proto::Overrun::AllowUpTo, money(allowance_minor))
        }
        OverrunPolicy::ChargeActual => (proto::Overrun::ChargeActual, String::new()),
    };
    proto::FeaturePrice {
        feature: price.feature.to_string(),
        wallet: price.wallet.to_string(),
        rule: Some(rule),
        overrun: overrun as i32,
        overrun_allowance,
        effective_at_ms: price.effective_at_ms,
        stop: match price.stop {
            StopRule::FinishRunning => proto::StopRule::FinishRunning,
            StopRule::StopRunning => proto::StopRule::StopRunning,
        } as i32,
    }
}

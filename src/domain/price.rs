//! Prices: how usage becomes money.
//!
//! A feature has one price rule and is paid from one wallet. Prices are exact decimals; a
//! computed cost that falls between minor units is rounded by [`super::money::round_to_minor`]:
//! up for a hold, half-even for a charge.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::grant::{OverrunPolicy, StopRule};
use super::ids::{FeatureId, ModelId, WalletId};
use super::money::{Amount, AmountError, Rounding, SCALE, parse_decimal, round_to_minor};

/// Most models in one per-token price.
pub const MODELS_PER_PRICE_MAX: usize = 256;
/// Most features in the catalog.
pub const CATALOG_FEATURES_MAX: usize = 10_000;

/// A quantity of units (minutes, requests, images): a non-negative decimal with at most six
/// fractional digits, at most one billion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Units(Decimal);

impl Serialize for Units {
    /// Normalised (`1.50` as `1.5`), so that equal quantities give equal request fingerprints.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.normalize())
    }
}

impl<'de> Deserialize<'de> for Units {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Units, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Units::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Units {
    const MAX: i64 = 1_000_000_000;

    pub fn parse(text: &str) -> Result<Units, AmountError> {
        let value = parse_decimal(text, SCALE)?;
        if value > Decimal::from(Self::MAX) {
            return Err(AmountError::TooLarge {
                max: Self::MAX.to_string(),
            });
        }
        Ok(Units(value))
    }

    pub fn one() -> Units {
        Units(Decimal::ONE)
    }

    pub fn as_decimal(self) -> Decimal {
        self.0
    }
}

/// What was used, to be priced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub units: Option<Units>,
    pub model: Option<ModelId>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's cache, priced at the cached-input price.
    #[serde(default)]
    pub cached_input_tokens: u64,
}

/// Prices of one model, per 1 000 000 tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPrice {
    pub input: Amount,
    pub output: Amount,
    /// Price per 1M cached input tokens; without it they cost as much as other input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Amount>,
}

/// How usage of a feature becomes money.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceRule {
    /// A flat price per call; `units`, when given, counts calls.
    PerCall { price: Amount },
    /// A price per unit of something measured (`minute`, `request`, `image`).
    PerUnit { unit: String, price: Amount },
    /// Prices per 1M input and output tokens, by model.
    PerMillionTokens {
        models: BTreeMap<ModelId, TokenPrice>,
    },
}

/// A feature's entry in the price catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeaturePrice {
    pub feature: FeatureId,
    pub wallet: WalletId,
    pub rule: PriceRule,
    /// What a commit larger than its hold is charged.
    #[serde(default)]
    pub overrun: OverrunPolicy,
    /// What happens to holds still running when the wallet runs out.
    #[serde(default)]
    pub stop: StopRule,
    /// When this price takes over from the feature's previous one, Unix milliseconds. Holds
    /// keep the price in force when they were taken.
    #[serde(default)]
    pub effective_at_ms: i64,
}

/// Why usage could not be priced. Each names the usage field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("usage.units: required by the per-{unit} price of this feature")]
    UnitsRequired { unit: String },
    #[error("usage.model: required by the per-token price of this feature")]
    ModelRequired,
    #[error("usage.model: no price for model \"{model}\" (priced models: {known})")]
    UnknownModel { model: String, known: String },
    #[error("usage: the cost {0}")]
    Amount(AmountError),
}

const ONE_MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

impl PriceRule {
    /// The cost of `usage`, in minor units, rounded for a hold or for a charge.
    pub fn cost_minor(&self, usage: &Usage, rounding: Rounding) -> Result<i64, PriceError> {
        let overflow = || {
            PriceError::Amount(AmountError::TooLarge {
                max: Amount::max().to_string(),
            })
        };
        let exact = match self {
            PriceRule::PerCall { price } => {
                let calls = usage.units.unwrap_or_else(Units::one);
                price
                    .as_decimal()
                    .checked_mul(calls.as_decimal())
                    .ok_or_else(overflow)?
            }
            PriceRule::PerUnit { unit, price } => {
                let units = usage
                    .units
                    .ok_or_else(|| PriceError::UnitsRequired { unit: unit.clone() })?;
                price
                    .as_decimal()
                    .checked_mul(units.as_decimal())
                    .ok_or_else(overflow)?
            }
            PriceRule::PerMillionTokens { models } => {
                let model = usage.model.as_ref().ok_or(PriceError::ModelRequired)?;
                let price = models.get(model).ok_or_else(|| PriceError::UnknownModel {
                    model: model.to_string(),
                    known: models
                        .keys()
                        .map(ModelId::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
                let input = price
                    .input
                    .as_decimal()
                    .checked_mul(Decimal::from(usage.input_tokens))
                    .ok_or_else(overflow)?;
                let output = price
                    .output
                    .as_decimal()
                    .checked_mul(Decimal::from(usage.output_tokens))
                    .ok_or_else(overflow)?;
                let cached = price
                    .cached_input
                    .unwrap_or(price.input)
                    .as_decimal()
                    .checked_mul(Decimal::from(usage.cached_input_tokens))
                    .ok_or_else(overflow)?;
                input
                    .checked_add(output)
                    .and_then(|sum| sum.checked_add(cached))
                    .ok_or_else(overflow)?
                    / ONE_MILLION
            }
        };
        round_to_minor(exact, rounding).map_err(PriceError::Amount)
    }

    /// A short description for people: `0.05 per minute`, `per 1M tokens (2 models)`.
    pub fn describe(&self) -> String {
        match self {
            PriceRule::PerCall { price } => format!("{price} per call"),
            PriceRule::PerUnit { unit, price } => format!("{price} per {unit}"),
            PriceRule::PerMillionTokens { models } => {
                format!("per 1M tokens ({} models)", models.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(text: &str) -> Amount {
        Amount::parse(text).unwrap()
    }

    fn units(text: &str) -> Usage {
        Usage {
            units: Some(Units::parse(text).unwrap()),
            ..Usage::default()
        }
    }

    fn tokens(model: &str, input: u64, output: u64) -> Usage {
        Usage {
            model: Some(ModelId::parse(model).unwrap()),
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    fn token_rule() -> PriceRule {
        PriceRule::PerMillionTokens {
            models: [(
                ModelId::parse("gpt-x").unwrap(),
                TokenPrice {
                    input: amount("3.00"),
                    output: amount("15.00"),
                    cached_input: Some(amount("0.30")),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn per_call_is_flat_and_counts_calls() {
        let rule = PriceRule::PerCall {
            price: amount("0.002"),
        };
        assert_eq!(
            rule.cost_minor(&Usage::default(), Rounding::Charge),
            Ok(2_000)
        );
        assert_eq!(rule.cost_minor(&units("3"), Rounding::Charge), Ok(6_000));
    }

    #[test]
    fn per_unit_multiplies_fractions_of_units_exactly() {
        let rule = PriceRule::PerUnit {
            unit: "minute".into(),
            price: amount("0.05"),
        };
        assert_eq!(
            rule.cost_minor(&units("2.5"), Rounding::Charge),
            Ok(125_000)
        );
        assert_eq!(
            rule.cost_minor(&Usage::default(), Rounding::Hold),
            Err(PriceError::UnitsRequired {
                unit: "minute".into()
            })
        );
    }

    #[test]
    fn per_unit_rounds_up_for_holds_and_half_even_for_charges() {
        let rule = PriceRule::PerUnit {
            unit: "minute".into(),
            price: amount("0.000003"),
        };
        // 0.5 minutes × 0.000003 = 0.0000015: between 1 and 2 minor units.
        assert_eq!(rule.cost_minor(&units("0.5"), Rounding::Hold), Ok(2));
        assert_eq!(rule.cost_minor(&units("0.5"), Rounding::Charge), Ok(2));
        // 0.833333 × 0.000003 = 0.000002499999: rounds to 3 for a hold, 2 for a charge.
        assert_eq!(rule.cost_minor(&units("0.833333"), Rounding::Hold), Ok(3));
        assert_eq!(rule.cost_minor(&units("0.833333"), Rounding::Charge), Ok(2));
    }

    #[test]
    fn per_million_tokens_prices_input_and_output_by_model() {
        let rule = token_rule();
        // 1200 × 3.00 / 1M + 350 × 15.00 / 1M = 0.0036 + 0.00525 = 0.00885
        assert_eq!(
            rule.cost_minor(&tokens("gpt-x", 1_200, 350), Rounding::Charge),
            Ok(8_850)
        );
        // 1 input token costs 0.000003 exactly; 1 output token 0.000015.
        assert_eq!(
            rule.cost_minor(&tokens("gpt-x", 1, 1), Rounding::Charge),
            Ok(18)
        );
        assert!(matches!(
            rule.cost_minor(&tokens("other", 1, 1), Rounding::Charge),
            Err(PriceError::UnknownModel { .. })
        ));
        assert_eq!(
            rule.cost_minor(&Usage::default(), Rounding::Charge),
            Err(PriceError::ModelRequired)
        );
    }

    #[test]
    fn cached_input_tokens_have_their_own_price_or_the_input_price() {
        let mut usage = tokens("gpt-x", 1_000, 0);
        usage.cached_input_tokens = 10_000;
        // 1000 × 3.00/1M + 10000 × 0.30/1M = 0.003 + 0.003
        assert_eq!(token_rule().cost_minor(&usage, Rounding::Charge), Ok(6_000));
        let plain = PriceRule::PerMillionTokens {
            models: [(
                ModelId::parse("m").unwrap(),
                TokenPrice {
                    input: amount("1.00"),
                    output: amount("2.00"),
                    cached_input: None,
                },
            )]
            .into(),
        };
        let mut usage = tokens("m", 0, 0);
        usage.cached_input_tokens = 1_000_000;
        assert_eq!(plain.cost_minor(&usage, Rounding::Charge), Ok(1_000_000));
    }

    #[test]
    fn per_million_tokens_rounds_fractions_of_a_minor_unit() {
        let rule = PriceRule::PerMillionTokens {
            models: [(
                ModelId::parse("m").unwrap(),
                TokenPrice {
                    input: amount("0.15"),
                    output: amount("0.60"),
                    cached_input: None,
                },
            )]
            .into(),
        };
        // 7 × 0.15 / 1M = 0.00000105: 2 minor units for a hold, 1 for a charge.
        assert_eq!(rule.cost_minor(&tokens("m", 7, 0), Rounding::Hold), Ok(2));
        assert_eq!(rule.cost_minor(&tokens("m", 7, 0), Rounding::Charge), Ok(1));
    }

    #[test]
    fn costs_beyond_the_money_bound_are_refused() {
        let rule = token_rule();
        assert!(matches!(
            rule.cost_minor(&tokens("gpt-x", u64::MAX, u64::MAX), Rounding::Charge),
            Err(PriceError::Amount(AmountError::TooLarge { .. }))
        ));
        let rule = PriceRule::PerUnit {
            unit: "minute".into(),
            price: Amount::max(),
        };
        assert!(matches!(
            rule.cost_minor(&units("2"), Rounding::Charge),
            Err(PriceError::Amount(AmountError::TooLarge { .. }))
        ));
    }

    #[test]
    fn units_are_bounded_and_exact() {
        assert!(Units::parse("1000000000").is_ok());
        assert!(Units::parse("1000000000.000001").is_err());
        assert!(Units::parse("0.0000001").is_err());
        assert!(Units::parse("-1").is_err());
    }
}

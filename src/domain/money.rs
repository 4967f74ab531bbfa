//! Money: exact decimal amounts and the integer minor units the store keeps.
//!
//! Every amount that crosses the API is a decimal string. It is parsed here, strictly, into an
//! [`Amount`], and turned into integer minor units (millionths) by [`Amount::to_minor`]. Nothing
//! is ever rounded on the way in: input that cannot be held exactly is rejected. The only
//! rounding in creditgate is of computed prices, in [`round_to_minor`].
//!
//! Minor units are bounded by 2^53 − 1 so that they stay exact as Lua numbers (doubles) in the
//! Redis store.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};

/// Fractional digits of the money scale: one minor unit is 0.000001.
pub const SCALE: u32 = 6;

/// Minor units in one whole unit of money.
pub const MINOR_PER_UNIT: i64 = 1_000_000;

/// The largest number of minor units any stored value may reach: 2^53 − 1, exact in a double.
pub const MINOR_MAX: i64 = (1 << 53) - 1;

/// Longest decimal string accepted, so that parsing is bounded before it starts.
const TEXT_LEN_MAX: usize = 40;

/// Why a decimal string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("is empty")]
    Empty,
    #[error("must be a plain decimal such as \"12.50\" (digits with an optional fraction)")]
    Malformed,
    #[error("must not be negative")]
    Negative,
    #[error("has more than {max} fractional digits")]
    TooPrecise { max: u32 },
    #[error("exceeds the maximum of {max}")]
    TooLarge { max: String },
}

/// A non-negative amount of money with at most [`SCALE`] fractional digits and at most
/// [`MINOR_MAX`] minor units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(Decimal);

impl Amount {
    pub const ZERO: Amount = Amount(Decimal::ZERO);

    /// Parses a decimal string such as `"10"`, `"2.50"` or `"0.000125"`.
    ///
    /// Rejects signs, whitespace, exponents, words such as `NaN`, more than six fractional
    /// digits (even trailing zeros: the caller meant something we cannot promise to keep) and
    /// values above [`Amount::max`].
    ///
    /// ```
    /// use creditgate::domain::{Amount, AmountError};
    ///
    /// assert_eq!(Amount::parse("2.50").unwrap().to_minor(), 2_500_000);
    /// assert_eq!(Amount::parse("1e3"), Err(AmountError::Malformed));
    /// assert_eq!(Amount::parse("0.0000001"), Err(AmountError::TooPrecise { max: 6 }));
    /// ```
    pub fn parse(text: &str) -> Result<Amount, AmountError> {
        let value = parse_decimal(text, SCALE)?;
        Self::from_decimal(value)
    }

    /// The largest amount: [`MINOR_MAX`] minor units.
    pub fn max() -> Amount {
        Amount::from_minor(MINOR_MAX)
    }

    /// Builds an amount from minor units.
    ///
    /// # Panics
    /// When `minor` is outside `0..=MINOR_MAX`: stored values are checked on every write, so a
    /// value outside that range read back is a corrupted store, not bad input.
    pub fn from_minor(minor: i64) -> Amount {
        assert!(
            (0..=MINOR_MAX).contains(&minor),
            "minor units out of range: {minor}"
        );
        Amount(Decimal::new(minor, SCALE))
    }

    /// The amount in integer minor units; exact by construction.
    pub fn to_minor(self) -> i64 {
        let mut scaled = self.0;
        scaled.rescale(SCALE);
        // The mantissa at scale 6 is the number of minor units; it fits in i64 because the
        // value is at most MINOR_MAX minor units.
        scaled.mantissa() as i64
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn as_decimal(self) -> Decimal {
        self.0
    }

    fn from_decimal(value: Decimal) -> Result<Amount, AmountError> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(AmountError::Negative);
        }
        if value > Decimal::new(MINOR_MAX, SCALE) {
            return Err(AmountError::TooLarge {
                max: format_minor(MINOR_MAX),
            });
        }
        Ok(Amount(value.abs()))
    }
}

impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Amount, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Amount::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_minor(self.to_minor()))
    }
}

/// Formats minor units as a decimal string with at least two fractional digits and no
/// trailing zeros beyond them: `7500000` → `"7.50"`, `125` → `"0.000125"`.
pub fn format_minor(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    let whole = magnitude / MINOR_PER_UNIT as u64;
    let fraction = format!("{:06}", magnitude % MINOR_PER_UNIT as u64);
    let trimmed = fraction.trim_end_matches('0');
    let digits = if trimmed.len() < 2 {
        &fraction[..2]
    } else {
        trimmed
    };
    format!("{sign}{whole}.{digits}")
}

/// How a computed price that falls between two minor units is rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Up, so that a hold always covers the charge it stands for.
    Hold,
    /// Half to even, so that many charges carry no bias.
    Charge,
}

/// Rounds a computed, non-negative value to minor units. The one place where money is rounded.
pub fn round_to_minor(value: Decimal, rounding: Rounding) -> Result<i64, AmountError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(AmountError::Negative);
    }
    let strategy = match rounding {
        Rounding::Hold => RoundingStrategy::AwayFromZero,
        Rounding::Charge => RoundingStrategy::MidpointNearestEven,
    };
    let rounded = value.round_dp_with_strategy(SCALE, strategy);
    Amount::from_decimal(rounded).map(Amount::to_minor)
}

/// Parses a non-negative plain decimal with at most `scale_max` fractional digits.
///
/// The grammar is `DIGITS [ "." DIGITS ]`, ASCII only: no sign, no whitespace, no exponent.
pub fn parse_decimal(text: &str, scale_max: u32) -> Result<Decimal, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    if text.len() > TEXT_LEN_MAX {
        return Err(AmountError::Malformed);
    }
    let unsigned = match text.strip_prefix('-') {
        Some(rest) if is_plain_decimal(rest) => return Err(AmountError::Negative),
        Some(_) => return Err(AmountError::Malformed),
        None => text,
    };
    if !is_plain_decimal(unsigned) {
        return Err(AmountError::Malformed);
    }
    let fraction_len = unsigned.split_once('.').map_or(0, |(_, f)| f.len());
    if fraction_len > scale_max as usize {
        return Err(AmountError::TooPrecise { max: scale_max });
    }
    Decimal::from_str_exact(unsigned).map_err(|_| AmountError::TooLarge {
        max: format_minor(MINOR_MAX),
    })
}

fn is_plain_decimal(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(Amount::parse("10").unwrap().to_minor(), 10_000_000);
        assert_eq!(Amount::parse("2.50").unwrap().to_minor(), 2_500_000);
        assert_eq!(Amount::parse("0.000001").unwrap().to_minor(), 1);
        assert_eq!(Amount::parse("0").unwrap().to_minor(), 0);
        assert_eq!(Amount::parse("007.5").unwrap().to_minor(), 7_500_000);
    }

    #[test]
    fn rejects_what_is_not_a_plain_decimal() {
        for text in [
            " 1", "1 ", "1.", ".5", "+1", "1e3", "1E3", "NaN", "nan", "inf", "Infinity", "1,5",
            "1.2.3", "0x10", "١", "--1", "-", "1_000",
        ] {
            assert_eq!(Amount::parse(text), Err(AmountError::Malformed), "{text:?}");
        }
        assert_eq!(Amount::parse(""), Err(AmountError::Empty));
        assert_eq!(
            Amount::parse(&"1".repeat(41)),
            Err(AmountError::Malformed),
            "overlong input is refused before parsing"
        );
    }

    #[test]
    fn rejects_negative_values() {
        assert_eq!(Amount::parse("-1"), Err(AmountError::Negative));
        assert_eq!(Amount::parse("-0.01"), Err(AmountError::Negative));
    }

    #[test]
    fn rejects_more_digits_than_the_scale_even_trailing_zeros() {
        assert_eq!(
            Amount::parse("0.0000001"),
            Err(AmountError::TooPrecise { max: 6 })
        );
        assert_eq!(
            Amount::parse("1.0000000"),
            Err(AmountError::TooPrecise { max: 6 })
        );
    }

    #[test]
    fn bounds_values_at_two_to_the_53_minor_units() {
        let max = "9007199254.740991";
        assert_eq!(Amount::parse(max).unwrap().to_minor(), MINOR_MAX);
        assert_eq!(Amount::max().to_string(), max);
        assert!(matches!(
            Amount::parse("9007199254.740992"),
            Err(AmountError::TooLarge { .. })
        ));
        assert!(matches!(
            Amount::parse("99999999999999999999999999999999"),
            Err(AmountError::TooLarge { .. })
        ));
    }

    #[test]
    fn formats_with_two_to_six_fractional_digits() {
        assert_eq!(format_minor(7_500_000), "7.50");
        assert_eq!(format_minor(10_000_000), "10.00");
        assert_eq!(format_minor(125), "0.000125");
        assert_eq!(format_minor(1_230_000), "1.23");
        assert_eq!(format_minor(1_234_500), "1.2345");
        assert_eq!(format_minor(0), "0.00");
        assert_eq!(format_minor(-2_500_000), "-2.50");
    }

    #[test]
    fn rounds_holds_up_and_charges_half_even() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(round_to_minor(d("0.0000001"), Rounding::Hold), Ok(1));
        assert_eq!(round_to_minor(d("0.0000001"), Rounding::Charge), Ok(0));
        assert_eq!(round_to_minor(d("0.0000005"), Rounding::Charge), Ok(0));
        assert_eq!(round_to_minor(d("0.0000015"), Rounding::Charge), Ok(2));
        assert_eq!(round_to_minor(d("0.0000025"), Rounding::Charge), Ok(2));
        assert_eq!(round_to_minor(d("0.0000025"), Rounding::Hold), Ok(3));
        assert_eq!(round_to_minor(d("1.5"), Rounding::Hold), Ok(1_500_000));
        assert!(matches!(
            round_to_minor(d("9007199254.7409911"), Rounding::Hold),
            Err(AmountError::TooLarge { .. })
        ));
        assert_eq!(
            round_to_minor(d("9007199254.7409911"), Rounding::Charge),
            Ok(MINOR_MAX)
        );
    }

    proptest! {
        #[test]
        fn minor_units_round_trip_through_text(minor in 0..=MINOR_MAX) {
            let text = format_minor(minor);
            let amount = Amount::parse(&text).unwrap();
            prop_assert_eq!(amount.to_minor(), minor);
            prop_assert_eq!(amount.to_string(), text);
            prop_assert_eq!(Amount::from_minor(minor), amount);
        }

        #[test]
        fn any_accepted_text_is_held_exactly(whole in 0u64..9_007_199_254, fraction in 0u32..1_000_000, digits in 0usize..=6) {
            let fraction = format!("{fraction:06}");
            let text = if digits == 0 { whole.to_string() } else { format!("{whole}.{}", &fraction[..digits]) };
            let amount = Amount::parse(&text).unwrap();
            prop_assert_eq!(amount.as_decimal(), text.parse::<Decimal>().unwrap());
            prop_assert_eq!(Amount::from_minor(amount.to_minor()), amount);
        }

        #[test]
        fn arbitrary_text_never_panics_and_accepted_text_is_exact(text in "\\PC{0,24}") {
            if let Ok(amount) = Amount::parse(&text) {
                prop_assert_eq!(amount.as_decimal(), text.parse::<Decimal>().unwrap());
            }
        }
    }
}

//! The price catalog: listing it, and setting one feature's price.

// The client's connections, answers and helpers are its parent's.
use super::*;

/// A feature's price as given on the command line.
pub enum PriceCall {
    Flat(String),
    PerUnit {
        unit: String,
        price: String,
    },
    Model {
        model: String,
        input: String,
        output: String,
        cached_input: Option<String>,
    },
}

/// A feature's overrun policy as given on the command line.
pub enum Overrun {
    CapAtHold,
    AllowUpTo(String),
    ChargeActual,
}

fn price_json(price: &proto::FeaturePrice) -> Value {
    use proto::feature_price::Rule;
    let rule = match &price.rule {
        Some(Rule::PerCall(p)) => json!({"per_call": {"price": p.price}}),
        Some(Rule::PerUnit(p)) => json!({"per_unit": {"unit": p.unit, "price": p.price}}),
        Some(Rule::PerMillionTokens(p)) => json!({"per_million_tokens": {"models": p
            .models
            .iter()
            .map(|m| json!({
                "model": m.model, "input": m.input, "output": m.output,
                "cached_input": m.cached_input,
            }))
            .collect::<Vec<_>>()}}),
        None => Value::Null,
    };
    let overrun = proto::Overrun::try_from(price.overrun)
        .unwrap_or_default()
        .as_str_name()
        .trim_start_matches("OVERRUN_")
        .to_ascii_lowercase();
    let mut json = json!({
        "feature": price.feature,
        "wallet": price.wallet,
        "rule": rule,
        "effective_at_ms": price.effective_at_ms,
    });
    json["overrun"] = match overrun.as_str() {
        "allow_up_to" => json!({"policy": overrun, "allowance": price.overrun_allowance}),
        "unspecified" => json!({"policy": "cap_at_hold"}),
        _ => json!({"policy": overrun}),
    };
    json["stop"] = match proto::StopRule::try_from(price.stop).unwrap_or_default() {
        proto::StopRule::StopRunning => json!("stop_running"),
        _ => json!("finish_running"),
    };
    json
}

fn catalog_json(catalog: &proto::PriceCatalog) -> Value {
    json!({"features": catalog.features.iter().map(price_json).collect::<Vec<_>>()})
}

/// The price catalog.
pub async fn price_list(connection: &Connection) -> Result<Answer, CliError> {
    let catalog = admin(connection)
        .await?
        .get_prices(proto::GetPricesRequest {})
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: catalog_json(&catalog),
    })
}

/// Sets a feature's price. A model's token prices are added to the feature's other models
/// (read, then written: two people setting models of one feature at once may lose one).
pub async fn price_set(
    connection: &Connection,
    feature: String,
    wallet: Option<String>,
    price: PriceCall,
    overrun: Option<Overrun>,
    stop: Option<proto::StopRule>,
    effective_at_ms: i64,
) -> Result<Answer, CliError> {
    use proto::feature_price::Rule;
    let mut client = admin(connection).await?;
    let current = client
        .get_prices(proto::GetPricesRequest {})
        .await?
        .into_inner()
        .features
        .into_iter()
        .rfind(|p| p.feature == feature);
    // The feature keeps its overrun policy unless one is given.
    let (overrun, overrun_allowance) = match (overrun, &current) {
        (Some(Overrun::CapAtHold), _) => (proto::Overrun::CapAtHold as i32, String::new()),
        (Some(Overrun::ChargeActual), _) => (proto::Overrun::ChargeActual as i32, String::new()),
        (Some(Overrun::AllowUpTo(allowance)), _) => (proto::Overrun::AllowUpTo as i32, allowance),
        (None, Some(current)) => (current.overrun, current.overrun_allowance.clone()),
        (None, None) => (proto::Overrun::CapAtHold as i32, String::new()),
    };
    // And its stop rule.
    let stop = match (stop, &current) {
        (Some(stop), _) => stop as i32,
        (None, Some(current)) => current.stop,
        (None, None) => proto::StopRule::FinishRunning as i32,
    };
    let rule = match price {
        PriceCall::Flat(price) => Rule::PerCall(proto::PerCallPrice { price }),
        PriceCall::PerUnit { unit, price } => Rule::PerUnit(proto::PerUnitPrice { unit, price }),
        PriceCall::Model {
            model,
            input,
            output,
            cached_input,
        } => {
            let mut models: Vec<proto::ModelPrice> = current
                .and_then(|p| match p.rule {
                    Some(Rule::PerMillionTokens(tokens)) => Some(tokens.models),
                    _ => None,
                })
                .unwrap_or_default();
            models.retain(|m| m.model != model);
            models.push(proto::ModelPrice {
                model,
                input,
                output,
                cached_input: cached_input.unwrap_or_default(),
            });
            Rule::PerMillionTokens(proto::PerMillionTokensPrice { models })
        }
    };
    let catalog = client
        .set_prices(proto::SetPricesRequest {
            features: vec![proto::FeaturePrice {
                feature,
                wallet: wallet.unwrap_or_default(),
                rule: Some(rule),
                overrun,
                overrun_allowance,
                effective_at_ms,
                stop,
            }],
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: catalog_json(&catalog),
    })
}

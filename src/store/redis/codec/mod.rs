//! What the Lua scripts store and answer, in Rust: encoded grants and splits, hold hashes,
//! replies, and outbox entries. Each function here mirrors one in the shared Lua
//! (`lua/grants.lua`, `lua/wallet.lua`, …) or the JSON a script builds; every number travels
//! as a decimal string.
//!
//! The hashes' encodings are here; replies are read in `reply.rs`, outbox entries in
//! `outbox.rs`.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

use crate::domain::alert::{AlertRule, TopUpPolicy, TopUpSize, WalletAlerts};
use crate::domain::{
    Account, AccountId, AccountStatus, CommitRecord, FeatureId, Grant, GrantId, GrantKind,
    GrantTerms, Hold, HoldState, IdempotencyKey, Labels, LimitState, LimitWindow, ModelId,
    OverrunPolicy, Period, Portion, Postpaid, PriceRule, Recurrence, ReleaseRecord, ReservationId,
    SpendLimit, StopRule, Usage, WalletId,
};
use crate::events::{EventDetail, WalletEvent, WalletEventKind};
use crate::record::{EntryKind, LedgerEntry, OutboxEntry, Remembered, Reply};
use crate::store::{
    AlertsSnapshot, ChargeReceipt, CommitReceipt, ExtendReceipt, ReleaseReceipt, ReserveReceipt,
    StoreError,
};

mod outbox;
mod reply;

pub use outbox::{event, outbox_entries};
pub use reply::{
    charge_receipt, commit_receipt, extend_receipt, release_receipt, reply_json, reserve_receipt,
};

fn bad(what: &str, text: &str) -> StoreError {
    StoreError::Inconsistent(format!("redis holds an unreadable {what}: {text:?}"))
}

pub fn int(text: &str, what: &str) -> Result<i64, StoreError> {
    text.parse().map_err(|_| bad(what, text))
}

fn opt_int(text: &str, what: &str) -> Result<Option<i64>, StoreError> {
    if text.is_empty() {
        Ok(None)
    } else {
        int(text, what).map(Some)
    }
}

fn id<T, E>(
    text: &str,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    parse(text).map_err(|_| bad(what, text))
}

/// A reply or entry JSON object whose values are strings.
#[derive(Deserialize)]
struct Fields(HashMap<String, Value>);

impl Fields {
    fn parse(text: &str) -> Result<Fields, StoreError> {
        serde_json::from_str(text).map_err(|_| bad("reply", text))
    }

    fn text(&self, key: &str) -> &str {
        self.0.get(key).and_then(Value::as_str).unwrap_or("")
    }

    fn int(&self, key: &str) -> Result<i64, StoreError> {
        int(self.text(key), key)
    }
}

/// `grant=amount,grant=amount`.
pub fn encode_split(split: &[Portion]) -> String {
    split
        .iter()
        .map(|p| format!("{}={}", p.grant, p.amount_minor))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn decode_split(text: &str) -> Result<Vec<Portion>, StoreError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| {
            let (grant, amount) = part.split_once('=').ok_or_else(|| bad("split", text))?;
            Ok(Portion {
                grant: id(grant, "grant id", GrantId::parse_stored)?,
                amount_minor: int(amount, "split amount")?,
            })
        })
        .collect()
}

/// `kind|priority|amount|remaining|held|expires_at|created_at|voided_at|recurrence|period|
/// features`, as in `lua/grants.lua`; the period is `index` or `index,granted at its start`.
pub fn encode_grant(grant: &Grant) -> String {
    let t = &grant.terms;
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        t.kind.as_str(),
        t.priority,
        t.amount_minor,
        grant.remaining_minor,
        grant.held_minor,
        opt(t.expires_at_ms),
        grant.created_at_ms,
        opt(grant.voided_at_ms),
        recurrence_text(t.recurrence.as_ref()),
        match grant.period_granted_minor {
            Some(granted) => format!("{},{granted}", grant.period_index),
            None => grant.period_index.to_string(),
        },
        features_text(&t.features),
    )
}

/// `''` or `month|year,anchor (or ''),rollover max`.
pub fn recurrence_text(recurrence: Option<&Recurrence>) -> String {
    recurrence
        .map(|r| {
            let anchor = r.anchor_ms.map(|a| a.to_string()).unwrap_or_default();
            format!("{},{anchor},{}", r.period.as_str(), r.rollover_max_minor)
        })
        .unwrap_or_default()
}

fn decode_recurrence(text: &str) -> Result<Option<Recurrence>, StoreError> {
    if text.is_empty() {
        return Ok(None);
    }
    let [period, anchor, rollover] = text.split(',').collect::<Vec<_>>()[..] else {
        return Err(bad("grant recurrence", text));
    };
    Ok(Some(Recurrence {
        period: Period::parse(period).ok_or_else(|| bad("grant period", period))?,
        anchor_ms: opt_int(anchor, "grant period anchor")?,
        rollover_max_minor: int(rollover, "grant rollover")?,
    }))
}

/// `flex cap|flex used|flex held|debt`.
pub fn encode_postpaid(p: &Postpaid) -> String {
    format!(
        "{}|{}|{}|{}",
        p.flex_cap_minor, p.flex_used_minor, p.flex_held_minor, p.debt_minor
    )
}

pub fn decode_postpaid(text: &str) -> Result<Postpaid, StoreError> {
    let f: Vec<&str> = text.split('|').collect();
    let [cap, used, held, debt] = f.as_slice() else {
        return Err(bad("flex and debt", text));
    };
    Ok(Postpaid {
        flex_cap_minor: int(cap, "flex cap")?,
        flex_used_minor: int(used, "flex used")?,
        flex_held_minor: int(held, "flex held")?,
        debt_minor: int(debt, "debt")?,
    })
}

/// A spend limit as the scripts keep it: a JSON object of strings.
pub fn encode_limit(l: &LimitState) -> String {
    json_string(&serde_json::json!({
        "key": l.limit.label_key,
        "value": l.limit.label_value,
        "per": l.limit.window.as_str(),
        "amount": l.limit.amount_minor.to_string(),
        "index": l.window_index.to_string(),
        "used": l.used_minor.to_string(),
        "held": l.held_minor.to_string(),
        "since": l.since_ms.to_string(),
    }))
}

pub fn decode_limit(text: &str) -> Result<LimitState, StoreError> {
    let f = Fields::parse(text)?;
    Ok(LimitState {
        limit: SpendLimit {
            label_key: f.text("key").to_owned(),
            label_value: f.text("value").to_owned(),
            window: LimitWindow::parse(f.text("per")).ok_or_else(|| bad("limit window", text))?,
            amount_minor: f.int("amount")?,
        },
        window_index: f.int("index")?,
        used_minor: f.int("used")?,
        held_minor: f.int("held")?,
        since_ms: f.int("since")?,
    })
}

/// A hold's overrun policy: `cap_at_hold`, `allow_up_to:<allowance>` or `charge_actual`.
pub fn encode_overrun(policy: OverrunPolicy) -> String {
    match policy {
        OverrunPolicy::AllowUpTo { allowance_minor } => format!("allow_up_to:{allowance_minor}"),
        other => other.name().to_owned(),
    }
}

fn decode_overrun(text: &str) -> Result<OverrunPolicy, StoreError> {
    Ok(match text {
        "" | "cap_at_hold" => OverrunPolicy::CapAtHold,
        "charge_actual" => OverrunPolicy::ChargeActual,
        _ => match text.strip_prefix("allow_up_to:") {
            Some(allowance) => OverrunPolicy::AllowUpTo {
                allowance_minor: int(allowance, "overrun allowance")?,
            },
            None => return Err(bad("overrun policy", text)),
        },
    })
}

pub fn features_text(features: &[FeatureId]) -> String {
    features
        .iter()
        .map(FeatureId::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn decode_grant(grant_id: &str, wallet: &str, text: &str) -> Result<Grant, StoreError> {
    let mut f: Vec<&str> = text.splitn(11, '|').collect();
    // Grants written before recurrence have neither it nor the period.
    let (recurrence, period_index, period_granted_minor) = match f.len() {
        11 => {
            let features = f.pop().expect("eleven fields");
            let period = f.pop().expect("eleven fields");
            let recurrence = f.pop().expect("eleven fields");
            f.push(features);
            let (index, granted) = match period.split_once(',') {
                Some((index, granted)) => (index, Some(int(granted, "grant period start")?)),
                None => (period, None),
            };
            (
                decode_recurrence(recurrence)?,
                int(index, "grant period")?,
                granted,
            )
        }
        9 => (None, 0, None),
        _ => return Err(bad("grant", text)),
    };
    let mut features = f[8]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| id(s, "feature", FeatureId::parse))
        .collect::<Result<Vec<_>, _>>()?;
    features.sort();
    Ok(Grant {
        terms: GrantTerms {
            id: id(grant_id, "grant id", GrantId::parse)?,
            wallet: id(wallet, "wallet", WalletId::parse)?,
            kind: GrantKind::parse(f[0]).ok_or_else(|| bad("grant kind", f[0]))?,
            priority: f[1].parse().map_err(|_| bad("priority", f[1]))?,
            amount_minor: int(f[2], "grant amount")?,
            expires_at_ms: opt_int(f[5], "grant expiry")?,
            features,
            recurrence,
        },
        remaining_minor: int(f[3], "grant remaining")?,
        held_minor: int(f[4], "grant held")?,
        created_at_ms: int(f[6], "grant creation")?,
        voided_at_ms: opt_int(f[7], "grant void")?,
        period_index,
        period_granted_minor,
    })
}

fn state(text: &str) -> Result<HoldState, StoreError> {
    Ok(match text {
        "held" => HoldState::Held,
        "committed" => HoldState::Committed,
        "released" => HoldState::Released,
        "expired" => HoldState::Expired,
        _ => return Err(bad("hold state", text)),
    })
}

/// The fields of a hold hash, as the scripts write them.
pub fn hold_fields(hold: &Hold) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_owned(), v);
    };
    put("wallet", hold.wallet.to_string());
    put("feature", hold.feature.to_string());
    put("amount", hold.amount_minor.to_string());
    put("split", encode_split(&hold.split));
    put("created", hold.created_at_ms.to_string());
    put("expires", hold.expires_at_ms.to_string());
    put("state", hold.state.as_str().to_owned());
    put("version", hold.version.to_string());
    put("labels", json_string(&hold.labels));
    put(
        "price",
        hold.price.as_ref().map(json_string).unwrap_or_default(),
    );
    put(
        "model",
        hold.model
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    );
    put(
        "idem",
        hold.idempotency_key
            .as_ref()
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default(),
    );
    put("overrun", encode_overrun(hold.overrun));
    put("stop", hold.stop.name().to_owned());
    if !hold.limits.is_empty() {
        put("limits", json_string(&hold.limits));
    }
    if let Some(c) = &hold.commit {
        put("c_entry", c.entry_id.clone());
        put("c_requested", c.requested_minor.to_string());
        put("c_overrun", c.overrun_minor.to_string());
        put("c_charged", c.charged_minor.to_string());
        put("c_released", c.released_minor.to_string());
        put("c_split", encode_split(&c.split));
        put("c_available", c.available_minor.to_string());
        put("c_at", c.at_ms.to_string());
        put(
            "c_reply",
            json_string(&serde_json::json!({
                "token": hold.id.token(),
                "entry_id": c.entry_id,
                "requested": c.requested_minor.to_string(),
                "overrun": c.overrun_minor.to_string(),
                "charged": c.charged_minor.to_string(),
                "released": c.released_minor.to_string(),
                "split": encode_split(&c.split),
                "available": c.available_minor.to_string(),
            })),
        );
    }
    if let Some(r) = &hold.release {
        put("r_released", r.released_minor.to_string());
        put("r_available", r.available_minor.to_string());
        put("r_at", r.at_ms.to_string());
    }
    f
}

fn json_string<T: serde::Serialize>(value: &T) -> String {
    // Plain data with string keys always serialises.
    serde_json::to_string(value).expect("serialises to JSON")
}

fn get<'a>(f: &'a HashMap<String, String>, key: &str) -> &'a str {
    f.get(key).map_or("", String::as_str)
}

/// A hold from its hash fields.
pub fn hold_from_fields(
    account: &AccountId,
    token: &str,
    f: &HashMap<String, String>,
) -> Result<Hold, StoreError> {
    let opt_json = |key: &str| -> Result<Option<PriceRule>, StoreError> {
        let text = get(f, key);
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(text)
            .map(Some)
            .map_err(|_| bad(key, text))
    };
    let id =
        ReservationId::parse(&format!("{account}/{token}")).map_err(|_| bad("token", token))?;
    let commit = if f.contains_key("c_charged") {
        let charged_minor = int(get(f, "c_charged"), "charged")?;
        Some(CommitRecord {
            entry_id: get(f, "c_entry").to_owned(),
            requested_minor: match get(f, "c_requested") {
                "" => charged_minor,
                text => int(text, "requested")?,
            },
            overrun_minor: match get(f, "c_overrun") {
                "" => 0,
                text => int(text, "overrun")?,
            },
            charged_minor,
            released_minor: int(get(f, "c_released"), "released")?,
            split: decode_split(get(f, "c_split"))?,
            available_minor: int(get(f, "c_available"), "available")?,
            at_ms: int(get(f, "c_at"), "commit time")?,
        })
    } else {
        None
    };
    let release = if f.contains_key("r_released") {
        Some(ReleaseRecord {
            released_minor: int(get(f, "r_released"), "released")?,
            available_minor: int(get(f, "r_available"), "available")?,
            at_ms: int(get(f, "r_at"), "release time")?,
        })
    } else {
        None
    };
    let labels: Labels = match get(f, "labels") {
        "" => Labels::new(),
        text => serde_json::from_str(text).map_err(|_| bad("labels", text))?,
    };
    Ok(Hold {
        id,
        wallet: self::id(get(f, "wallet"), "wallet", WalletId::parse)?,
        feature: self::id(get(f, "feature"), "feature", FeatureId::parse)?,
        amount_minor: int(get(f, "amount"), "hold amount")?,
        split: decode_split(get(f, "split"))?,
        created_at_ms: int(get(f, "created"), "hold creation")?,
        expires_at_ms: int(get(f, "expires"), "hold expiry")?,
        state: state(get(f, "state"))?,
        labels,
        price: opt_json("price")?,
        overrun: decode_overrun(get(f, "overrun"))?,
        stop: match get(f, "stop") {
            "" => StopRule::default(),
            text => StopRule::parse(text).ok_or_else(|| bad("stop rule", text))?,
        },
        limits: match get(f, "limits") {
            "" => Vec::new(),
            text => serde_json::from_str(text).map_err(|_| bad("hold limits", text))?,
        },
        model: match get(f, "model") {
            "" => None,
            text => Some(self::id(text, "model", ModelId::parse)?),
        },
        idempotency_key: match get(f, "idem") {
            "" => None,
            text => Some(self::id(
                text,
                "idempotency key",
                IdempotencyKey::parse_stored,
            )?),
        },
        commit,
        release,
        version: match get(f, "version") {
            "" => 0,
            text => text.parse().map_err(|_| bad("hold version", text))?,
        },
    })
}

/// A wallet's thresholds and top-up policy as the scripts keep them: `rules` and `top_up`
/// (see `load_alerts` in events.lua).
pub fn encode_alerts(alerts: &WalletAlerts) -> (String, String) {
    let rules = alerts
        .rules
        .iter()
        .map(|rule| match rule {
            AlertRule::Below { amount_minor } => format!("below:{amount_minor}"),
            AlertRule::AllowanceUsed { percent } => format!("percent:{percent}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    let top_up = match alerts.top_up {
        None => String::new(),
        Some(TopUpPolicy {
            below_minor,
            size: TopUpSize::Amount { amount_minor },
        }) => format!("{below_minor}|amount|{amount_minor}"),
        Some(TopUpPolicy {
            below_minor,
            size: TopUpSize::Target { target_minor },
        }) => format!("{below_minor}|target|{target_minor}"),
    };
    (rules, top_up)
}

/// Which thresholds may fire: '1' or '0' for each.
fn armed(text: &str) -> Vec<bool> {
    text.bytes().map(|b| b != b'0').collect()
}

/// A wallet's alerts from the fields of its hash.
pub fn decode_alerts(
    wallet: &str,
    f: &HashMap<String, String>,
) -> Result<AlertsSnapshot, StoreError> {
    let mut rules = Vec::new();
    for text in get(f, "rules").split(',').filter(|t| !t.is_empty()) {
        let rule = match text.split_once(':') {
            Some(("below", n)) => AlertRule::Below {
                amount_minor: int(n, "threshold")?,
            },
            Some(("percent", n)) => AlertRule::AllowanceUsed {
                percent: n.parse().map_err(|_| bad("percent", n))?,
            },
            _ => return Err(bad("alert rule", text)),
        };
        rules.push(rule);
    }
    let top_up = match get(f, "top_up").split('|').collect::<Vec<_>>().as_slice() {
        [""] => None,
        [below, "amount", n] => Some(TopUpPolicy {
            below_minor: int(below, "top-up threshold")?,
            size: TopUpSize::Amount {
                amount_minor: int(n, "top-up amount")?,
            },
        }),
        [below, "target", n] => Some(TopUpPolicy {
            below_minor: int(below, "top-up threshold")?,
            size: TopUpSize::Target {
                target_minor: int(n, "top-up target")?,
            },
        }),
        _ => return Err(bad("top-up policy", get(f, "top_up"))),
    };
    let armed = armed(get(f, "armed"));
    Ok(AlertsSnapshot {
        wallet: id(wallet, "wallet", WalletId::parse)?,
        alerts: WalletAlerts { rules, top_up },
        armed,
        open_top_up: Some(get(f, "open").to_owned()).filter(|o| !o.is_empty()),
        top_ups: match get(f, "made") {
            "" => 0,
            n => n.parse().map_err(|_| bad("top-ups made", n))?,
        },
    })
}

#[cfg(test)]
mod tests;

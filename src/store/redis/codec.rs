//! What the Lua scripts store and answer, in Rust: encoded grants and splits, hold hashes,
//! replies, and outbox entries. Each function here mirrors one in the shared Lua (`lua/grants.lua`, `lua/wallet.lua`, …) or the JSON a
//! script builds; every number travels as a decimal string.

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

fn reservation(account: &AccountId, token: &str) -> Result<ReservationId, StoreError> {
    ReservationId::parse(&format!("{account}/{token}")).map_err(|_| bad("token", token))
}

pub fn reserve_receipt(account: &AccountId, text: &str) -> Result<ReserveReceipt, StoreError> {
    let f = Fields::parse(text)?;
    Ok(ReserveReceipt {
        id: reservation(account, f.text("token"))?,
        wallet: id(f.text("wallet"), "wallet", WalletId::parse)?,
        amount_minor: f.int("amount")?,
        expires_at_ms: f.int("expires")?,
        split: decode_split(f.text("split"))?,
        available_minor: f.int("available")?,
    })
}

pub fn commit_receipt(account: &AccountId, text: &str) -> Result<CommitReceipt, StoreError> {
    let f = Fields::parse(text)?;
    Ok(CommitReceipt {
        id: reservation(account, f.text("token"))?,
        entry_id: f.text("entry_id").to_owned(),
        requested_minor: f.int("requested")?,
        overrun_minor: f.int("overrun")?,
        charged_minor: f.int("charged")?,
        released_minor: f.int("released")?,
        split: decode_split(f.text("split"))?,
        available_minor: f.int("available")?,
    })
}

pub fn release_receipt(account: &AccountId, text: &str) -> Result<ReleaseReceipt, StoreError> {
    let f = Fields::parse(text)?;
    Ok(ReleaseReceipt {
        id: reservation(account, f.text("token"))?,
        released_minor: f.int("released")?,
        available_minor: f.int("available")?,
    })
}

pub fn extend_receipt(account: &AccountId, text: &str) -> Result<ExtendReceipt, StoreError> {
    let f = Fields::parse(text)?;
    Ok(ExtendReceipt {
        id: reservation(account, f.text("token"))?,
        amount_minor: f.int("amount")?,
        expires_at_ms: f.int("expires")?,
        split: decode_split(f.text("split"))?,
        available_minor: f.int("available")?,
    })
}

pub fn charge_receipt(text: &str) -> Result<ChargeReceipt, StoreError> {
    let f = Fields::parse(text)?;
    Ok(ChargeReceipt {
        entry_id: f.text("entry_id").to_owned(),
        wallet: id(f.text("wallet"), "wallet", WalletId::parse)?,
        charged_minor: f.int("charged")?,
        split: decode_split(f.text("split"))?,
        available_minor: f.int("available")?,
    })
}

/// The JSON a reply is kept as, as the scripts write it, for hydration.
pub fn reply_json(reply: &Reply) -> String {
    let value = match reply {
        Reply::Reserve(r) => serde_json::json!({
            "token": r.id.token(), "wallet": r.wallet.as_str(),
            "amount": r.amount_minor.to_string(), "expires": r.expires_at_ms.to_string(),
            "split": encode_split(&r.split), "available": r.available_minor.to_string(),
        }),
        Reply::Extend(r) => serde_json::json!({
            "token": r.id.token(), "amount": r.amount_minor.to_string(),
            "expires": r.expires_at_ms.to_string(), "split": encode_split(&r.split),
            "available": r.available_minor.to_string(),
        }),
        Reply::Charge(r) => serde_json::json!({
            "entry_id": r.entry_id, "wallet": r.wallet.as_str(),
            "charged": r.charged_minor.to_string(), "split": encode_split(&r.split),
            "available": r.available_minor.to_string(),
        }),
    };
    json_string(&value)
}

/// A Lua list: cjson writes an empty table as `{}`.
fn list(value: Option<&Value>) -> &[Value] {
    match value {
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

fn value_text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

fn ledger_entry(value: &Value) -> Result<LedgerEntry, StoreError> {
    let t = |key: &str| value_text(value, key);
    let opt = |key: &str| (!t(key).is_empty()).then(|| t(key).to_owned());
    let account = id(t("account"), "account", AccountId::parse)?;
    Ok(LedgerEntry {
        id: t("id").to_owned(),
        kind: EntryKind::parse(t("kind")).ok_or_else(|| bad("entry kind", t("kind")))?,
        wallet: id(t("wallet"), "wallet", WalletId::parse)?,
        feature: opt("feature")
            .map(|f| id(&f, "feature", FeatureId::parse))
            .transpose()?,
        model: opt("model")
            .map(|m| id(&m, "model", ModelId::parse))
            .transpose()?,
        usage: opt("usage")
            .map(|u| serde_json::from_str::<Usage>(&u).map_err(|_| bad("usage", &u)))
            .transpose()?,
        amount_minor: int(t("amount"), "entry amount")?,
        split: decode_split(t("split"))?,
        reservation: opt("reservation")
            .map(|r| id(&r, "reservation", ReservationId::parse))
            .transpose()?,
        grant: opt("grant")
            .map(|g| id(&g, "grant", GrantId::parse_stored))
            .transpose()?,
        idempotency_key: opt("idem")
            .map(|k| id(&k, "idempotency key", IdempotencyKey::parse_stored))
            .transpose()?,
        labels: match t("labels") {
            "" => Labels::new(),
            text => serde_json::from_str(text).map_err(|_| bad("labels", text))?,
        },
        reason: opt("reason"),
        refund_of: opt("refund_of"),
        overrun_minor: match t("overrun") {
            "" => 0,
            text => int(text, "entry overrun")?,
        },
        at_ms: int(t("at"), "entry time")?,
        account,
    })
}

/// The outbox entries a script wrote, from their JSON.
/// An event as the scripts make it (see `new_event` in events.lua).
pub fn event(value: &Value) -> Result<WalletEvent, StoreError> {
    let t = |key: &str| value_text(value, key);
    let account = id(t("account"), "account", AccountId::parse)?;
    let kind = WalletEventKind::parse(t("kind")).ok_or_else(|| bad("event kind", t("kind")))?;
    let detail = match kind {
        WalletEventKind::HoldExpired => EventDetail::Hold {
            reservation: ReservationId::parse(&format!("{account}/{}", t("reservation")))
                .map_err(|_| bad("reservation", t("reservation")))?,
        },
        WalletEventKind::LowBalance => EventDetail::Rule {
            rule: AlertRule::Below {
                amount_minor: int(t("below"), "threshold")?,
            },
        },
        WalletEventKind::Alert => EventDetail::Rule {
            rule: AlertRule::AllowanceUsed {
                percent: t("percent")
                    .parse()
                    .map_err(|_| bad("percent", t("percent")))?,
            },
        },
        WalletEventKind::LimitReached => EventDetail::Limit {
            limit: t("limit").to_owned(),
        },
        WalletEventKind::TopUpRequested => EventDetail::TopUp {
            request_id: t("request").to_owned(),
            amount_minor: int(t("amount"), "top-up amount")?,
        },
        WalletEventKind::Depleted | WalletEventKind::Replenished => EventDetail::None,
    };
    Ok(WalletEvent {
        id: t("id").to_owned(),
        kind,
        wallet: id(t("wallet"), "wallet", WalletId::parse)?,
        account,
        at_ms: int(t("at"), "event time")?,
        available_minor: int(t("available"), "available")?,
        detail,
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

pub fn outbox_entries(text: &str) -> Result<Vec<OutboxEntry>, StoreError> {
    let values: Value = serde_json::from_str(text).map_err(|_| bad("outbox record", text))?;
    let mut entries = Vec::new();
    for value in list(Some(&values)) {
        let t = |key: &str| value_text(value, key);
        let account = || id(t("account"), "account", AccountId::parse);
        let entry = match t("type") {
            "account" => OutboxEntry::Account(Account {
                status: AccountStatus::parse(t("status"))
                    .ok_or_else(|| bad("account status", t("status")))?,
                display_name: t("name").to_owned(),
                created_at_ms: int(t("created"), "account creation")?,
                id: account()?,
            }),
            "grant" => {
                let entry = ledger_entry(value.get("entry").unwrap_or(&Value::Null))?;
                OutboxEntry::Grant {
                    grant: decode_grant(t("grant_id"), t("wallet"), t("grant"))?,
                    entry,
                    answers: Some(t("answers").to_owned()).filter(|a| !a.is_empty()),
                }
            }
            "void" => OutboxEntry::Void {
                entry: ledger_entry(value.get("entry").unwrap_or(&Value::Null))?,
            },
            "charge" => {
                OutboxEntry::Charge(ledger_entry(value.get("entry").unwrap_or(&Value::Null))?)
            }
            "reset" => OutboxEntry::Reset {
                account: account()?,
                grant: id(t("grant"), "grant", GrantId::parse)?,
                period_index: int(t("period"), "grant period")?,
                granted_minor: int(t("granted"), "grant period start")?,
                entries: list(value.get("entries"))
                    .iter()
                    .map(ledger_entry)
                    .collect::<Result<_, _>>()?,
            },
            "limit" => OutboxEntry::Limit {
                account: account()?,
                limit: SpendLimit {
                    label_key: t("key").to_owned(),
                    label_value: t("value").to_owned(),
                    window: LimitWindow::parse(t("per"))
                        .ok_or_else(|| bad("limit window", t("per")))?,
                    amount_minor: int(t("amount"), "limit amount")?,
                },
                since_ms: int(t("since"), "limit start")?,
                removed: t("removed") == "1",
                at_ms: int(t("at"), "limit time")?,
            },
            "event" => OutboxEntry::Event(event(value)?),
            "alerts" => OutboxEntry::Alerts {
                account: account()?,
                wallet: id(t("wallet"), "wallet", WalletId::parse)?,
                alerts: serde_json::from_str(t("alerts"))
                    .map_err(|_| bad("alerts", t("alerts")))?,
                armed: armed(t("armed")),
                at_ms: int(t("at"), "alerts time")?,
            },
            "alerts_armed" => OutboxEntry::AlertsArmed {
                account: account()?,
                wallet: id(t("wallet"), "wallet", WalletId::parse)?,
                armed: armed(t("armed")),
                at_ms: int(t("at"), "alerts time")?,
            },
            "wallet" => OutboxEntry::Wallet {
                account: account()?,
                wallet: id(t("wallet"), "wallet", WalletId::parse)?,
                flex_cap_minor: int(t("flex_cap"), "flex cap")?,
                at_ms: int(t("at"), "wallet time")?,
            },
            "hold" => {
                let fields: HashMap<String, String> = value
                    .get("hold")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                OutboxEntry::Hold(hold_from_fields(&account()?, t("token"), &fields)?)
            }
            "remember" => {
                let account = account()?;
                let reply = match t("reply_kind") {
                    "reserve" => Reply::Reserve(reserve_receipt(&account, t("reply"))?),
                    "extend" => Reply::Extend(extend_receipt(&account, t("reply"))?),
                    "charge" => Reply::Charge(charge_receipt(t("reply"))?),
                    other => return Err(bad("reply kind", other)),
                };
                OutboxEntry::Remember(Remembered {
                    key: id(t("key"), "idempotency key", IdempotencyKey::parse_stored)?,
                    fingerprint: t("fingerprint").to_owned(),
                    reply,
                    at_ms: int(t("at"), "reply time")?,
                    account,
                })
            }
            other => return Err(bad("outbox entry type", other)),
        };
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_round_trip_through_their_encoding() {
        let grant = Grant {
            terms: GrantTerms {
                id: GrantId::parse("g:1").unwrap(),
                wallet: WalletId::parse("cloud").unwrap(),
                kind: GrantKind::Promotional,
                priority: 20,
                amount_minor: 9_007_199_254_740_991,
                expires_at_ms: Some(1_800_000_000_000),
                features: vec![
                    FeatureId::parse("agent.minutes").unwrap(),
                    FeatureId::parse("cloud.inference").unwrap(),
                ],
                recurrence: None,
            },
            remaining_minor: 5,
            held_minor: 2,
            created_at_ms: 1_700_000_000_000,
            voided_at_ms: None,
            period_index: 0,
            period_granted_minor: None,
        };
        let text = encode_grant(&grant);
        assert_eq!(
            text,
            "promotional|20|9007199254740991|5|2|1800000000000|1700000000000|||0|agent.minutes,cloud.inference"
        );
        assert_eq!(decode_grant("g:1", "cloud", &text).unwrap(), grant);
        let before_recurrence = "promotional|20|9007199254740991|5|2|1800000000000|1700000000000||agent.minutes,cloud.inference";
        assert_eq!(
            decode_grant("g:1", "cloud", before_recurrence).unwrap(),
            grant
        );

        let mut plan = grant.clone();
        plan.terms.kind = GrantKind::Included;
        plan.terms.recurrence = Some(Recurrence {
            period: Period::Month,
            anchor_ms: None,
            rollover_max_minor: 250,
        });
        plan.period_index = 3;
        plan.period_granted_minor = Some(1_250);
        let text = encode_grant(&plan);
        assert!(text.contains("|month,,250|3,1250|"), "{text}");
        assert_eq!(decode_grant("g:1", "cloud", &text).unwrap(), plan);
    }

    #[test]
    fn splits_round_trip() {
        let split = vec![
            Portion {
                grant: GrantId::parse("a@b").unwrap(),
                amount_minor: 1,
            },
            Portion {
                grant: GrantId::parse("c").unwrap(),
                amount_minor: 9_007_199_254_740_991,
            },
        ];
        assert_eq!(decode_split(&encode_split(&split)).unwrap(), split);
        assert!(decode_split("").unwrap().is_empty());
        assert!(decode_split("a").is_err());
    }
}

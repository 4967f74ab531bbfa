//! Outbox entries as the scripts write them: ledger entries, wallet events, and every other
//! kind of entry a record carries.

// The codec's helpers (numbers, ids, splits, grants, holds) are its parent's.
use super::*;

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

/// The outbox entries a script wrote, from their JSON.
///
/// Long, but one arm per entry type, each reading back the fields its script writes.
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

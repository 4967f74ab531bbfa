//! Replies: the receipts the scripts answer with, and the JSON an idempotent reply is kept
//! as.

// The codec's helpers (numbers, ids, splits, grants, holds) are its parent's.
use super::*;

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

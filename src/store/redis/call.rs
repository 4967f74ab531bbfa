//! One call of a script, as the batch of its partition takes it, and what it answered.

use std::sync::{Arc, OnceLock};

use crate::record::OutboxRecord;

/// One operation of a batch, as its own function would be called.
pub struct Call {
    /// The operation's name in `lua/batch.lua`.
    pub op: &'static str,
    pub partition: u32,
    pub keys: Vec<Vec<u8>>,
    pub args: Vec<Vec<u8>>,
}

/// What a script answered, and the outbox record its operation's entries went into when it
/// ran in a batch (its reply then names none).
#[derive(Debug)]
pub struct Reply {
    pub fields: Vec<String>,
    pub record: Option<Arc<Appended>>,
}

/// A record a batch appended, as Redis answered it: its entries are read only when a caller
/// needs them (most reserves never do), and once however many callers share it.
#[derive(Debug)]
pub struct Appended {
    /// Its position in the partition's stream, `<stream id>@<epoch>`.
    pub position: String,
    /// Its entries, as the batch wrote them.
    pub entries: String,
    /// The record, once read.
    pub read: OnceLock<Arc<OutboxRecord>>,
}

impl Reply {
    pub fn alone(fields: Vec<String>) -> Reply {
        Reply {
            fields,
            record: None,
        }
    }
}

impl std::ops::Deref for Reply {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.fields
    }
}

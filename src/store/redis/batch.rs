//! Calls of one partition that arrive together go to Redis as one call of `lua/batch.lua`.
//!
//! Reserve, commit, release, extend and charge wait in their partition's queue; the queue's
//! task takes what is waiting (up to [`BATCH_LEN_MAX`]) as one call, with at most
//! [`IN_FLIGHT_MAX`] calls of a partition on their way at once. Nothing waits for a batch to
//! fill: a call that finds the partition idle goes at once, alone, and those that arrive while
//! calls are on their way ride on the next one. In Redis each operation runs as its own
//! script would, in order, and the batch appends one outbox record per account at its end
//! rather than one per operation: appending a record and encoding it were a large part of an
//! operation's time in Redis (see `docs/benchmarks.md`).

use std::sync::{Arc, OnceLock};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::call::{Appended, Call, Reply};
use super::keys::Partition;
use super::{Connection, StoreError, call_function, unavailable};

/// Most operations in one call.
const BATCH_LEN_MAX: usize = 64;

/// Most calls of one partition on their way at once: one running in Redis while the next
/// travels.
const IN_FLIGHT_MAX: usize = 2;

type Answer = Result<Reply, StoreError>;

/// How a batch reaches Redis: shared by every partition's task.
pub struct Settings {
    pub connection: Connection,
    /// The library's source, loaded again when Redis answers that the function is missing.
    pub library: Arc<str>,
    /// The batch's function.
    pub function: String,
    pub timeout: std::time::Duration,
    /// What to tell callers when a partition's outbox is full.
    pub outbox_bound: usize,
}

/// Every partition's queue.
pub struct Batches {
    queues: Vec<mpsc::UnboundedSender<(Call, oneshot::Sender<Answer>)>>,
}

impl Batches {
    /// Starts a task per partition; they end when the queues are dropped.
    pub fn start(settings: Settings, partitions: impl Iterator<Item = Partition>) -> Batches {
        let settings = Arc::new(settings);
        let queues = partitions
            .map(|partition| {
                let (queue, calls) = mpsc::unbounded_channel();
                tokio::spawn(run(settings.clone(), partition, calls));
                queue
            })
            .collect();
        Batches { queues }
    }

    /// Runs `call` in its partition's next batch; its answer is as its own function's would be.
    pub async fn call(&self, call: Call, timeout: std::time::Duration) -> Answer {
        let (answer, answered) = oneshot::channel();
        let queue = &self.queues[call.partition as usize];
        if queue.send((call, answer)).is_err() {
            return Err(unavailable("the partition's queue has stopped"));
        }
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(unavailable("the batch was dropped before it was answered")),
            Err(_) => Err(unavailable(format!("no answer within {timeout:?}"))),
        }
    }
}

/// One partition's task: takes what is waiting as one call, at most [`IN_FLIGHT_MAX`] on their
/// way at once.
async fn run(
    settings: Arc<Settings>,
    partition: Partition,
    mut calls: mpsc::UnboundedReceiver<(Call, oneshot::Sender<Answer>)>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let partition = Arc::new(partition);
    while let Some(first) = calls.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Taken after the permit: what arrived while every call was on its way rides now.
        let mut batch = vec![first];
        while batch.len() < BATCH_LEN_MAX {
            match calls.try_recv() {
                Ok(call) => batch.push(call),
                Err(_) => break,
            }
        }
        // A caller that stopped waiting (its client cancelled the call, or its deadline
        // passed) has its call left out: a backlog of calls nobody waits for does not run.
        batch.retain(|(_, answer)| !answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        metrics::histogram!(crate::telemetry::REDIS_BATCH_OPERATIONS).record(batch.len() as f64);
        let settings = settings.clone();
        let partition = partition.clone();
        tokio::spawn(async move {
            let (calls, answers): (Vec<Call>, Vec<_>) = batch.into_iter().unzip();
            let replies = send(&settings, &partition, &calls).await;
            drop(permit);
            match replies {
                Ok(replies) => {
                    for (answer, reply) in answers.into_iter().zip(replies) {
                        // A caller that stopped waiting has nothing to be told.
                        let _ = answer.send(reply);
                    }
                }
                Err(error) => {
                    for answer in answers {
                        let _ = answer.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}

/// One call of the batch's function; the answer of each operation, in order.
async fn send(
    settings: &Settings,
    partition: &Partition,
    calls: &[Call],
) -> Result<Vec<Answer>, StoreError> {
    let mut command = redis::cmd("FCALL");
    command
        .arg(&settings.function)
        .arg(1)
        .arg(partition.outbox())
        .arg(calls.len());
    for call in calls {
        command
            .arg(call.op)
            .arg(call.keys.len())
            .arg(call.args.len());
        for key in &call.keys {
            command.arg(key.as_slice());
        }
        for arg in &call.args {
            command.arg(arg.as_slice());
        }
    }
    let values: Vec<redis::Value> = call_function(
        &settings.connection,
        &settings.library,
        &command,
        settings.timeout,
    )
    .await?;
    let mut values = values.into_iter();
    let flat: Vec<String> = text_list(values.next())?;
    let mut records = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        let [position, entries] = pair else {
            return Err(StoreError::Inconsistent(format!(
                "a batch's record without its entries: {pair:?}"
            )));
        };
        records.push(Arc::new(Appended {
            position: position.clone(),
            entries: entries.clone(),
            read: OnceLock::new(),
        }));
    }
    let answers: Vec<Answer> = values
        .map(|value| {
            let mut fields = text_list(Some(value))?;
            if fields.is_empty() {
                return Err(StoreError::Inconsistent(
                    "an empty answer in a batch".into(),
                ));
            }
            let number: usize = fields.remove(0).parse().unwrap_or(0);
            if fields.first().map(String::as_str) == Some("error") {
                let message = fields.get(1).cloned().unwrap_or_default();
                return Err(super::error_answer(&message));
            }
            super::full_outbox(&fields, settings.outbox_bound)?;
            Ok(Reply {
                fields,
                record: number.checked_sub(1).and_then(|i| records.get(i).cloned()),
            })
        })
        .collect();
    if answers.len() != calls.len() {
        return Err(StoreError::Inconsistent(format!(
            "a batch of {} operations answered {}",
            calls.len(),
            answers.len()
        )));
    }
    Ok(answers)
}

fn text_list(value: Option<redis::Value>) -> Result<Vec<String>, StoreError> {
    let value = value.ok_or_else(|| StoreError::Inconsistent("a batch answered nothing".into()))?;
    redis::from_redis_value(value)
        .map_err(|e| StoreError::Inconsistent(format!("a batch's answer: {e}")))
}

//! Shutdown as a value: every background task takes a [`Shutdown`] and stops when it fires,
//! so nothing runs detached and `serve` can wait for everything to finish.

use tokio::sync::watch;

/// Fires every [`Shutdown`] made from it, once.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Resolves when the trigger fires (or is dropped).
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A trigger and the first of its listeners; clone the listener for each task.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        // No listener left means nothing to stop: not an error.
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Waits until shutdown is asked for.
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped, which also means stop.
        let _ = self.0.wait_for(|&fired| fired).await;
    }

    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }
}

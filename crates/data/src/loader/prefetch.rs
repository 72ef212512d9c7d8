//! Building the next micro-batches on a background thread while the trainer computes.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use super::{Batch, Loader, LoaderState};
use crate::error::Result;

/// Owns a loader on its own thread, `depth` batches ahead. Each batch comes with the
/// loader state *after* it, which is what a checkpoint taken after consuming it records.
pub struct Prefetcher {
    receiver: Receiver<Result<(Batch, LoaderState)>>,
    _thread: JoinHandle<()>,
}

impl Prefetcher {
    pub fn spawn(mut loader: Loader, rank: usize, world: usize, depth: usize) -> Self {
        let (sender, receiver) = sync_channel(depth.max(1));
        let thread = std::thread::spawn(move || loop {
            let next = loader.next_batch(rank, world).map(|batch| (batch, loader.state()));
            let failed = next.is_err();
            if sender.send(next).is_err() || failed {
                break;
            }
        });
        Self { receiver, _thread: thread }
    }

    /// The next batch and the state after it.
    pub fn next(&self) -> Result<(Batch, LoaderState)> {
        self.receiver
            .recv()
            .map_err(|_| crate::error::DataError::Invalid("the loader thread stopped".into()))?
    }
}

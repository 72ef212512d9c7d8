//! The in-process backend: ranks are threads of one process sharing a rendezvous slot.
//! The last rank to arrive at a collective combines the contributions; a rank that does
//! not arrive within the timeout makes the others fail, naming it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::collective::{combine, Collective, Membership, Op};
use crate::error::{DistError, Result};

struct Round {
    generation: u64,
    op: Option<Op>,
    contributions: Vec<Option<Vec<u8>>>,
    replies: Vec<Option<Vec<u8>>>,
    /// Set when a round failed; every rank then fails too.
    failure: Option<String>,
}

struct Shared {
    round: Mutex<Round>,
    arrived: Condvar,
    timeout: Duration,
}

/// One rank of a thread group.
pub struct ThreadRank {
    member: Membership,
    shared: Arc<Shared>,
}

/// `world` connected ranks, to be moved into one thread each.
pub fn thread_group(world: usize, timeout: Duration) -> Vec<ThreadRank> {
    let shared = Arc::new(Shared {
        round: Mutex::new(Round {
            generation: 0,
            op: None,
            contributions: vec![None; world],
            replies: vec![None; world],
            failure: None,
        }),
        arrived: Condvar::new(),
        timeout,
    });
    (0..world)
        .map(|rank| ThreadRank { member: Membership::new(rank, world), shared: shared.clone() })
        .collect()
}

impl Collective for ThreadRank {
    fn membership(&self) -> &Membership {
        &self.member
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.shared.timeout)
    }

    fn transfer(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        let (rank, world) = (self.rank(), self.world());
        let poisoned = || DistError::Rank { rank, message: "a rank panicked inside a collective".into() };
        let mut round = self.shared.round.lock().map_err(|_| poisoned())?;
        if let Some(failure) = &round.failure {
            return Err(DistError::Mismatch(failure.clone()));
        }
        match round.op {
            Some(current) if current != op => {
                let message = format!("rank {} called {op:?} while others called {current:?}", rank);
                round.failure = Some(message.clone());
                self.shared.arrived.notify_all();
                return Err(DistError::Mismatch(message));
            }
            _ => round.op = Some(op),
        }
        round.contributions[rank] = Some(contribution);
        let generation = round.generation;
        if round.contributions.iter().all(Option::is_some) {
            let contributions: Vec<Vec<u8>> =
                round.contributions.iter_mut().filter_map(Option::take).collect();
            match combine(op, &contributions) {
                Ok(replies) => round.replies = replies.into_iter().map(Some).collect(),
                Err(e) => round.failure = Some(e.to_string()),
            }
            round.op = None;
            round.generation += 1;
            self.shared.arrived.notify_all();
        } else {
            let deadline = Instant::now() + self.shared.timeout;
            while round.generation == generation && round.failure.is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let missing: Vec<usize> =
                        (0..world).filter(|&r| round.contributions[r].is_none()).collect();
                    let error = DistError::Timeout {
                        seconds: self.shared.timeout.as_secs(),
                        ranks: missing,
                        what: format!("{op:?}"),
                    };
                    round.failure = Some(error.to_string());
                    self.shared.arrived.notify_all();
                    return Err(error);
                }
                round = self.shared.arrived.wait_timeout(round, left).map_err(|_| poisoned())?.0;
            }
        }
        if let Some(failure) = &round.failure {
            return Err(DistError::Mismatch(failure.clone()));
        }
        round.replies[rank].take().ok_or_else(|| DistError::Rank {
            rank,
            message: "no reply for this rank (a collective was entered twice)".into(),
        })
    }
}

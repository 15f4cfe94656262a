//! Which logins the callout works on under a storm, and which it refuses, so that every login
//! is taken up or refused within [`LOGIN_BUDGET`] of its request's arrival (see the
//! [callout's documentation](super::callout)).
//!
//! At most [`Admission::at_once`] logins are worked on. The others wait, and a freed worker
//! takes the newest waiting login: under a storm the logins that just arrived are the ones
//! whose clients are still there, and the oldest are the ones that would miss their budget
//! anyway. A login still waiting when its budget runs out is refused then, so the waiting are
//! never more than the workers clear within the budget, at whatever pace they keep. At most
//! [`Admission::waiting`] wait at all: beyond that the oldest waiting login is refused at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long after its request's arrival a login is taken up or refused at the latest (the work
/// on it takes milliseconds, the store's answer usually coming from memory): well under the
/// 2 s after which nats-server pings a new connection and stock nats.go gives up its connect,
/// both counted from before the request arrives (the connection's accept, the client's
/// `CONNECT`, nats-server's own work on it).
pub const LOGIN_BUDGET: Duration = Duration::from_millis(750);
/// Logins worked on at once.
pub const LOGINS_AT_ONCE: usize = 64;
/// Logins that may wait for a worker at most, whatever the budget allows.
pub const LOGINS_WAITING: usize = 16_384;

/// The callout's admission limits. [`Default`] is what `membershipd serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Logins worked on at once ([`LOGINS_AT_ONCE`]).
    pub at_once: usize,
    /// Logins that may wait for a worker at most ([`LOGINS_WAITING`]).
    pub waiting: usize,
    /// How long after its arrival a login is taken up or refused at the latest
    /// ([`LOGIN_BUDGET`]).
    pub budget: Duration,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            at_once: LOGINS_AT_ONCE,
            waiting: LOGINS_WAITING,
            budget: LOGIN_BUDGET,
        }
    }
}

/// What a waiting login is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// A worker is its own now.
    Work,
    /// It cannot be answered within its budget: refuse it.
    Refuse,
}

/// A login that has just arrived: it has a worker, or waits for its [`Turn`].
pub(crate) enum Arrival {
    Work(Worker),
    Wait(Waiter),
}

/// A worker, handed on to the newest waiting login when dropped.
pub(crate) struct Worker {
    queue: Arc<Queue>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.queue.hand_on();
    }
}

/// A login waiting for its turn. Its [`turn`](Self::turn) must be awaited: a waiter dropped
/// before would stay counted as waiting.
pub(crate) struct Waiter {
    queue: Arc<Queue>,
    turn: oneshot::Receiver<Turn>,
    /// When its budget runs out.
    deadline: Instant,
}

impl Waiter {
    /// Waits for a worker until the login's budget runs out: the worker, or `None` if the
    /// login is to be refused.
    pub(crate) async fn turn(mut self) -> Option<Worker> {
        let turn = match tokio::time::timeout_at(self.deadline, &mut self.turn).await {
            Ok(turn) => turn.ok(),
            // Turns are given under the lock, so under it the login either has been given its
            // turn just now, or leaves the waiting for good (and can be given none after).
            Err(_) => {
                let mut state = self.queue.lock();
                let turn = self.turn.try_recv().ok();
                if turn.is_none() {
                    self.turn.close();
                    state.waiting -= 1;
                }
                turn
            }
        };
        (turn == Some(Turn::Work)).then(|| Queue::worker(&self.queue))
    }
}

/// The workers and the waiting logins, shared by every connection the callout serves.
pub(crate) struct Queue {
    limits: Admission,
    state: Mutex<State>,
}

struct State {
    /// Workers free now.
    free: usize,
    /// The waiting logins' turns, oldest first. A login that stopped waiting stays until it
    /// is reached from either end, and is then passed over.
    turns: VecDeque<oneshot::Sender<Turn>>,
    /// How many logins wait.
    waiting: usize,
}

impl Queue {
    pub(crate) fn new(limits: Admission) -> Self {
        Self {
            limits,
            state: Mutex::new(State {
                free: limits.at_once,
                turns: VecDeque::new(),
                waiting: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change to the state is whole before anything that could panic: a poisoned
        // lock still guards a valid state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn worker(self: &Arc<Self>) -> Worker {
        Worker {
            queue: Arc::clone(self),
        }
    }

    /// Takes in a login that has just arrived; its budget runs from now. Call it in the order
    /// the logins arrive.
    pub(crate) fn arrive(self: &Arc<Self>) -> Arrival {
        let mut state = self.lock();
        if state.free > 0 {
            state.free -= 1;
            return Arrival::Work(self.worker());
        }
        // Logins that stopped waiting are the oldest, as the newest are served first: drop
        // them, so that a long storm does not pile them up.
        while state.turns.front().is_some_and(oneshot::Sender::is_closed) {
            state.turns.pop_front();
        }
        let (tell, turn) = oneshot::channel();
        state.turns.push_back(tell);
        state.waiting += 1;
        // The oldest beyond what may wait are refused now.
        while state.waiting > self.limits.waiting {
            let Some(oldest) = state.turns.pop_front() else {
                break;
            };
            if oldest.send(Turn::Refuse).is_ok() {
                state.waiting -= 1;
            }
        }
        Arrival::Wait(Waiter {
            queue: Arc::clone(self),
            turn,
            deadline: Instant::now() + self.limits.budget,
        })
    }

    /// Gives a freed worker to the newest waiting login, or frees it.
    fn hand_on(&self) {
        let mut state = self.lock();
        while let Some(newest) = state.turns.pop_back() {
            if newest.send(Turn::Work).is_ok() {
                state.waiting -= 1;
                return;
            }
        }
        state.free += 1;
    }

    /// How many logins wait now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(at_once: usize) -> Arc<Queue> {
        Arc::new(Queue::new(Admission {
            at_once,
            ..Admission::default()
        }))
    }

    fn waits(arrival: Arrival) -> Waiter {
        match arrival {
            Arrival::Wait(waiter) => waiter,
            Arrival::Work(_) => panic!("a worker was free"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_login_that_gets_no_worker_within_its_budget_is_refused_when_the_budget_runs_out() {
        let queue = queue(1);
        let Arrival::Work(_busy) = queue.arrive() else {
            panic!("the one worker was free");
        };
        let arrived = Instant::now();
        let waiter = waits(queue.arrive());
        let turn = waiter.turn();
        tokio::pin!(turn);
        let just_before = LOGIN_BUDGET - Duration::from_millis(1);
        assert!(
            tokio::time::timeout(just_before, &mut turn).await.is_err(),
            "decided before its budget ran out"
        );
        assert!(turn.await.is_none(), "refused");
        // The paused clock's timers have a resolution of one millisecond.
        let waited = arrived.elapsed();
        assert!(
            waited >= LOGIN_BUDGET && waited <= LOGIN_BUDGET + Duration::from_millis(1),
            "refused when the budget ran out, not after {waited:?}"
        );
        assert_eq!(queue.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_most_that_may_wait_the_oldest_waiting_login_is_refused_at_once() {
        let queue = Arc::new(Queue::new(Admission {
            at_once: 1,
            waiting: 3,
            ..Admission::default()
        }));
        let Arrival::Work(_busy) = queue.arrive() else {
            panic!("the one worker was free");
        };
        let mut waiters: Vec<Waiter> = (0..3).map(|_| waits(queue.arrive())).collect();
        assert!(waiters.iter_mut().all(|w| w.turn.try_recv().is_err()));

        let mut newcomer = waits(queue.arrive());
        assert_eq!(waiters[0].turn.try_recv(), Ok(Turn::Refuse), "the oldest");
        assert!(waiters[1..].iter_mut().all(|w| w.turn.try_recv().is_err()));
        assert!(newcomer.turn.try_recv().is_err(), "the newcomer waits");
        assert_eq!(queue.waiting(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn logins_that_were_refused_when_their_budget_ran_out_do_not_pile_up() {
        let queue = queue(1);
        let Arrival::Work(_busy) = queue.arrive() else {
            panic!("the one worker was free");
        };
        for _ in 0..1_000 {
            assert!(waits(queue.arrive()).turn().await.is_none());
        }
        assert_eq!(queue.waiting(), 0);
        let _newcomer = waits(queue.arrive());
        assert_eq!(queue.lock().turns.len(), 1, "only the newcomer is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_worker_goes_to_the_newest_waiting_login() {
        let queue = queue(1);
        let Arrival::Work(busy) = queue.arrive() else {
            panic!("the one worker was free");
        };
        let (mut older, mut newer) = (waits(queue.arrive()), waits(queue.arrive()));
        drop(busy);
        assert_eq!(newer.turn.try_recv(), Ok(Turn::Work));
        assert!(older.turn.try_recv().is_err());
        assert_eq!(queue.waiting(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_login_given_its_turn_as_its_budget_runs_out_keeps_the_worker() {
        let queue = queue(1);
        let Arrival::Work(busy) = queue.arrive() else {
            panic!("the one worker was free");
        };
        let waiter = waits(queue.arrive());
        // The worker is handed on at the very moment the budget runs out.
        tokio::time::advance(LOGIN_BUDGET).await;
        drop(busy);
        let worker = waiter.turn().await;
        assert!(worker.is_some(), "the worker is not lost");
        drop(worker);
        assert!(matches!(queue.arrive(), Arrival::Work(_)));
    }
}

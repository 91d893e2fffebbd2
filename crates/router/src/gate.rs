//! Gates: whether an environment's requests go to its backends now (open)
//! or wait (held), and how many of them its backends are serving.
//!
//! Passing is cheap for a request: the count of requests in flight is kept
//! per thread (a cache line each, which other threads do not write) and
//! summed only by [`Gate::in_flight`] and [`Gate::drain`]; the phase is read
//! under the watch channel's read lock, and a request subscribes to it only
//! when it finds the gate held.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// How many counters a gate keeps: router threads beyond this share them
/// (still exact, only slower).
const SLOTS: usize = 16;

/// One thread's count, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicUsize);

/// The counter slot of the current thread.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|slot| *slot)
}

#[derive(Clone, Debug)]
pub(crate) enum Phase {
    Held,
    /// App name → backend authority.
    Open(Arc<HashMap<String, Arc<str>>>),
}

/// What a request finds at an open gate.
pub(crate) enum Passage {
    /// Through to this backend, counted until the [`InFlight`] drops.
    Open(Arc<str>, InFlight),
    /// The environment runs no app of that name.
    NoApp,
    /// Held (a deploy runs): wait with [`Gate::wait_open`].
    Held,
}

#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) phase: watch::Sender<Phase>,
    slots: [Slot; SLOTS],
    /// Drains waiting: only then does a request that ends wake them.
    draining: AtomicUsize,
    idle: Notify,
    /// The authorities this environment registered, to unregister.
    pub(crate) authorities: std::sync::Mutex<Vec<String>>,
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate {
            phase: watch::Sender::new(Phase::Held),
            slots: Default::default(),
            draining: AtomicUsize::new(0),
            idle: Notify::new(),
            authorities: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn take_authorities(&self) -> Vec<String> {
        match self.authorities.lock() {
            Ok(mut list) => std::mem::take(&mut *list),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// Requests being served now (every thread's count).
    pub(crate) fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .map(|slot| slot.0.load(Ordering::SeqCst))
            .sum()
    }

    /// Lets a request through if the gate is open. The count is taken
    /// *before* the phase is read, so a deploy that holds and then drains
    /// sees every request already past.
    pub(crate) fn pass(self: &Arc<Gate>, app: &str) -> Passage {
        let counted = InFlight::enter(self);
        let phase = self.phase.borrow();
        match &*phase {
            Phase::Open(backends) => match backends.get(app) {
                Some(authority) => Passage::Open(authority.clone(), counted),
                None => Passage::NoApp,
            },
            Phase::Held => Passage::Held,
        }
    }

    /// Waits until the gate is open (or `deadline`); false when it is not.
    pub(crate) async fn wait_open(&self, deadline: tokio::time::Instant) -> bool {
        let mut phase = self.phase.subscribe();
        let open = phase.wait_for(|phase| matches!(phase, Phase::Open(_)));
        matches!(tokio::time::timeout_at(deadline, open).await, Ok(Ok(_)))
    }

    /// Waits until no request is in flight, for at most `limit`; returns
    /// whether that happened.
    pub(crate) async fn drain(&self, limit: Duration) -> bool {
        self.draining.fetch_add(1, Ordering::SeqCst);
        let drained = tokio::time::timeout(limit, async {
            loop {
                // Created (so woken by `notify_waiters`) before counting.
                let idle = self.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await
        .is_ok();
        self.draining.fetch_sub(1, Ordering::SeqCst);
        drained
    }
}

/// Counts a request sent to an environment's backend until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    gate: Arc<Gate>,
    slot: usize,
}

impl InFlight {
    pub(crate) fn enter(gate: &Arc<Gate>) -> InFlight {
        let slot = thread_slot();
        gate.slots[slot].0.fetch_add(1, Ordering::SeqCst);
        InFlight {
            gate: gate.clone(),
            slot,
        }
    }

    /// Another count on the same gate (a tunnel outliving its request).
    pub(crate) fn again(&self) -> InFlight {
        InFlight::enter(&self.gate)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A thread's count reaching zero may make the sum zero: wake the
        // drains (if any: the lookup is after the decrement, and a drain
        // counts after announcing itself, so none misses it).
        if self.gate.slots[self.slot].0.fetch_sub(1, Ordering::SeqCst) == 1
            && self.gate.draining.load(Ordering::SeqCst) > 0
        {
            self.gate.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` on a thread of its own with a single-threaded runtime, as
    /// a router thread; returns once `body` has entered its requests.
    fn router_thread(
        gate: Arc<Gate>,
        requests: usize,
        release: tokio::sync::oneshot::Receiver<()>,
    ) -> std::thread::JoinHandle<usize> {
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let counted: Vec<InFlight> =
                    (0..requests).map(|_| InFlight::enter(&gate)).collect();
                let slot = counted.first().map_or(usize::MAX, |c| c.slot);
                let _ = entered_tx.send(());
                let _ = release.await;
                drop(counted);
                slot
            })
        });
        entered_rx.recv().expect("entered");
        thread
    }

    #[tokio::test]
    async fn drain_waits_for_the_requests_of_every_thread() {
        let gate = Arc::new(Gate::new());
        let (release_a, wait_a) = tokio::sync::oneshot::channel();
        let (release_b, wait_b) = tokio::sync::oneshot::channel();
        let a = router_thread(gate.clone(), 2, wait_a);
        let b = router_thread(gate.clone(), 1, wait_b);
        assert_eq!(gate.in_flight(), 3);
        // Bounded: not drained while both threads serve.
        assert!(!gate.drain(Duration::from_millis(50)).await);

        let drain = tokio::spawn({
            let gate = gate.clone();
            async move { gate.drain(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // One thread's count reaching zero is not the sum reaching zero.
        let _ = release_a.send(());
        let slot_a = tokio::task::spawn_blocking(move || a.join().expect("thread a"))
            .await
            .expect("join a");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(gate.in_flight(), 1);
        assert!(!drain.is_finished());
        let _ = release_b.send(());
        let slot_b = tokio::task::spawn_blocking(move || b.join().expect("thread b"))
            .await
            .expect("join b");
        assert!(
            tokio::time::timeout(Duration::from_secs(5), drain)
                .await
                .expect("drained in time")
                .expect("drain task")
        );
        assert_ne!(slot_a, slot_b, "each thread counts on its own line");
        assert_eq!(gate.in_flight(), 0);
        // Nothing in flight: drained at once.
        assert!(gate.drain(Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn a_request_counted_on_one_thread_may_end_on_another() {
        let gate = Arc::new(Gate::new());
        let counted = InFlight::enter(&gate);
        assert_eq!(gate.in_flight(), 1);
        let drain = tokio::spawn({
            let gate = gate.clone();
            async move { gate.drain(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::thread::spawn(move || drop(counted))
            .join()
            .expect("thread");
        assert!(drain.await.expect("drain"));
        assert_eq!(gate.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_held_gate_counts_nothing_and_opens_to_waiters() {
        let gate = Arc::new(Gate::new());
        assert!(matches!(gate.pass("web"), Passage::Held));
        assert_eq!(gate.in_flight(), 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_open(deadline).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let backends = HashMap::from([("web".to_string(), Arc::<str>::from("g7"))]);
        gate.phase.send_replace(Phase::Open(Arc::new(backends)));
        assert!(waiter.await.expect("waiter"));
        match gate.pass("web") {
            Passage::Open(authority, counted) => {
                assert_eq!(&*authority, "g7");
                assert_eq!(gate.in_flight(), 1);
                drop(counted);
            }
            _ => panic!("the gate is open"),
        }
        assert!(matches!(gate.pass("worker"), Passage::NoApp));
        assert_eq!(gate.in_flight(), 0);
        // Held again, a waiter's time runs out.
        gate.phase.send_replace(Phase::Held);
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        assert!(!gate.wait_open(soon).await);
    }
}

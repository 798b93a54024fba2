//! The service's event bus: one sender (the loop and the backup it runs), any number of listeners (the
//! admin page's status and live stream, the notifier, the console).
//!
//! A listener that falls behind must never lose a run's boundaries: the notifier mails on `RunFinished`,
//! the page's status says "running" from `RunStarted` until `RunFinished`. A `tokio::sync::broadcast`
//! channel drops the oldest events of a lagging receiver whatever they are, and a backup can send
//! hundreds of `Skipped` events between two turns of a listener (one per unreadable file, sent without
//! yielding). So each listener has a queue of its own, in which only the chatter (`Progress`,
//! `Skipped`) is thinned: a newer `Progress` of a share replaces one not yet taken, and past
//! [`CHATTER_LIMIT`] the oldest chatter goes. The boundaries and the other events (`Scheduled`,
//! `Refused`, `StateError`) are few (a handful a night) and are kept, up to [`KEPT_LIMIT`] for a
//! listener that stopped reading altogether. No crate we found offers "lossy for some messages,
//! lossless for others" with per-receiver queues (async-broadcast's overflow mode drops whatever is
//! oldest, as broadcast does), hence these few lines.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::Event;

/// Chatter events a listener's queue holds at most.
pub const CHATTER_LIMIT: usize = 256;
/// Other events a listener's queue holds at most (it stopped reading long ago when this is reached).
pub const KEPT_LIMIT: usize = 4096;

/// The sending side; clones send to the same listeners. When the last clone is dropped, every listener
/// gets `None` once its queue is empty.
#[derive(Clone)]
pub struct Bus {
    shared: Arc<Shared>,
}

struct Shared {
    listeners: Mutex<Vec<Arc<Queue>>>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    /// Woken on every push and on close. One consumer per queue, so `notify_one`'s stored permit is
    /// never lost.
    ready: Notify,
}

#[derive(Default)]
struct State {
    events: VecDeque<Event>,
    /// How many of `events` are chatter.
    chatter: usize,
    closed: bool,
}

/// A listener: every event sent after [`Bus::subscribe`], in order, the chatter possibly thinned.
pub struct Subscription {
    queue: Arc<Queue>,
}

fn is_chatter(e: &Event) -> bool {
    matches!(e, Event::Progress { .. } | Event::Skipped { .. })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bus {
    pub fn new() -> Bus {
        Bus {
            shared: Arc::new(Shared {
                listeners: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A new listener, which gets the events sent from now on.
    pub fn subscribe(&self) -> Subscription {
        let queue = Arc::new(Queue::default());
        lock(&self.shared.listeners).push(queue.clone());
        Subscription { queue }
    }

    /// Queues `e` for every listener (none is fine). Never waits.
    pub fn send(&self, e: Event) {
        let mut listeners = lock(&self.shared.listeners);
        // A dropped `Subscription` leaves its queue held only here.
        listeners.retain(|q| Arc::strong_count(q) > 1);
        for q in listeners.iter() {
            lock(&q.state).push(e.clone());
            q.ready.notify_one();
        }
    }
}

impl Default for Bus {
    fn default() -> Bus {
        Bus::new()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for q in lock(&self.listeners).iter() {
            lock(&q.state).closed = true;
            q.ready.notify_one();
        }
    }
}

impl State {
    fn push(&mut self, e: Event) {
        // The counters are cumulative: a newer tick of the same share makes a queued last one moot.
        if let (Event::Progress { share, .. }, Some(Event::Progress { share: last, .. })) =
            (&e, self.events.back())
            && last == share
            && let Some(back) = self.events.back_mut()
        {
            *back = e;
            return;
        }
        let chatter = is_chatter(&e);
        let oldest = if chatter && self.chatter >= CHATTER_LIMIT {
            self.events.iter().position(is_chatter)
        } else if !chatter && self.events.len() - self.chatter >= KEPT_LIMIT {
            self.events.iter().position(|e| !is_chatter(e))
        } else {
            None
        };
        if let Some(i) = oldest {
            self.pop_at(i);
        }
        self.chatter += usize::from(chatter);
        self.events.push_back(e);
    }

    fn pop_at(&mut self, i: usize) -> Option<Event> {
        let e = self.events.remove(i)?;
        self.chatter -= usize::from(is_chatter(&e));
        Some(e)
    }

    fn pop(&mut self) -> Option<Event> {
        self.pop_at(0)
    }
}

impl Subscription {
    /// The next event; `None` once the bus is gone and everything queued was taken.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            {
                let mut state = lock(&self.queue.state);
                if let Some(e) = state.pop() {
                    return Some(e);
                }
                if state.closed {
                    return None;
                }
            }
            self.queue.ready.notified().await;
        }
    }

    /// The next event if one is queued now.
    pub fn try_recv(&mut self) -> Option<Event> {
        lock(&self.queue.state).pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(share: &str, files: u64) -> Event {
        Event::Progress {
            share: share.into(),
            counters: backup::progress::Counters {
                files,
                ..Default::default()
            },
        }
    }

    fn skipped(n: usize) -> Event {
        Event::Skipped {
            share: "s".into(),
            path: format!("f{n}"),
            reason: "unreadable".into(),
        }
    }

    fn started() -> Event {
        Event::RunStarted {
            slot: "now".into(),
            shares: Vec::new(),
        }
    }

    fn finished() -> Event {
        Event::RunFinished {
            slot: "now".into(),
            status: "ok".into(),
            error: None,
        }
    }

    fn drain(s: &mut Subscription) -> Vec<Event> {
        std::iter::from_fn(|| s.try_recv()).collect()
    }

    #[test]
    fn a_listener_that_lags_keeps_the_boundaries_in_order() {
        let bus = Bus::new();
        let mut s = bus.subscribe();
        bus.send(started());
        for n in 0..10 * CHATTER_LIMIT {
            bus.send(skipped(n));
        }
        bus.send(progress("s", 1));
        bus.send(finished());
        let got = drain(&mut s);
        assert!(
            matches!(got.first(), Some(Event::RunStarted { .. })),
            "{got:?}"
        );
        assert!(
            matches!(got.last(), Some(Event::RunFinished { .. })),
            "{got:?}"
        );
        assert_eq!(
            got.len(),
            1 + CHATTER_LIMIT + 1,
            "chatter is thinned to its limit"
        );
        // The newest chatter is what stays, in order.
        let Some(Event::Skipped { path, .. }) = got.get(1) else {
            panic!("{got:?}")
        };
        assert_eq!(
            path,
            &format!("f{}", 10 * CHATTER_LIMIT - CHATTER_LIMIT + 1)
        );
        assert!(matches!(got[got.len() - 2], Event::Progress { .. }));
    }

    #[test]
    fn a_newer_progress_tick_replaces_the_last_one_of_the_same_share() {
        let bus = Bus::new();
        let mut s = bus.subscribe();
        bus.send(progress("a", 1));
        bus.send(progress("a", 2));
        bus.send(progress("b", 1));
        bus.send(progress("b", 5));
        bus.send(progress("a", 3));
        let files: Vec<(String, u64)> = drain(&mut s)
            .into_iter()
            .map(|e| match e {
                Event::Progress { share, counters } => (share, counters.files),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            files,
            [("a".into(), 2), ("b".into(), 5), ("a".into(), 3)],
            "only consecutive ticks of one share merge"
        );
    }

    #[test]
    fn a_listener_that_never_reads_holds_bounded_memory() {
        let bus = Bus::new();
        let mut s = bus.subscribe();
        for n in 0..3 * KEPT_LIMIT {
            bus.send(started());
            bus.send(skipped(n));
        }
        let got = drain(&mut s);
        assert_eq!(got.len(), KEPT_LIMIT + CHATTER_LIMIT);
    }

    #[test]
    fn dropped_listeners_are_forgotten_and_the_end_is_told() {
        let bus = Bus::new();
        let s = bus.subscribe();
        let mut kept = bus.subscribe();
        drop(s);
        bus.send(started());
        assert_eq!(lock(&bus.shared.listeners).len(), 1);
        drop(bus);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            assert!(matches!(kept.recv().await, Some(Event::RunStarted { .. })));
            assert!(kept.recv().await.is_none());
        });
    }

    #[test]
    fn recv_waits_for_the_next_event() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let bus = Bus::new();
            let mut s = bus.subscribe();
            let sender = bus.clone();
            let task = tokio::spawn(async move {
                tokio::task::yield_now().await;
                sender.send(finished());
            });
            assert!(matches!(s.recv().await, Some(Event::RunFinished { .. })));
            task.await.expect("sender task");
        });
    }
}

//! Published state: an actor's current value for readers, like a `watch`
//! channel, plus every transition in order for those that must announce
//! each one (D-Bus PropertiesChanged). A `watch` alone keeps only the
//! latest value, so `listening` then `idle` a few milliseconds apart reached
//! D-Bus as nothing at all; the contract promises every transition.
//!
//! The producer side has the shape of `watch::Sender` (`send_if_modified`,
//! `send_replace`, `borrow`, `subscribe`), and a [`Subscriber`] derefs to a
//! `watch::Receiver`, so readers that want only the latest value use it as
//! before. [`Subscriber::transitions`] gives an ordered, bounded queue of
//! values; a reader that falls more than [`TRANSITIONS`] behind is told the
//! current value instead and the loss is logged.

use std::ops::{Deref, DerefMut};

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, watch};

/// How many transitions a reader of [`Subscriber::transitions`] may fall
/// behind before it skips to the current value. State changes come from
/// people and the network a few at a time; 64 is far more than a D-Bus
/// forwarder needs between two wake-ups.
pub const TRANSITIONS: usize = 64;

/// The producer side: one owner publishes, everyone else reads.
#[derive(Debug)]
pub struct Publisher<T> {
    value: watch::Sender<T>,
    events: broadcast::Sender<T>,
}

/// A reader: the current value (through `Deref` to `watch::Receiver`), and
/// every transition on request.
#[derive(Debug)]
pub struct Subscriber<T> {
    value: watch::Receiver<T>,
    events: broadcast::WeakSender<T>,
}

/// A bounded, ordered queue of every value published after it was made.
#[derive(Debug)]
pub struct Transitions<T> {
    value: watch::Receiver<T>,
    events: broadcast::Receiver<T>,
}

/// A publisher holding `initial`, and a first reader.
pub fn channel<T: Clone>(initial: T) -> (Publisher<T>, Subscriber<T>) {
    let (value, rx) = watch::channel(initial);
    let (events, _) = broadcast::channel(TRANSITIONS);
    let sub = Subscriber {
        value: rx,
        events: events.downgrade(),
    };
    (Publisher { value, events }, sub)
}

impl<T: Clone> Publisher<T> {
    /// Change the value in place; when `modify` returns true the change is
    /// published (as `watch::Sender::send_if_modified`).
    pub fn send_if_modified(&self, modify: impl FnOnce(&mut T) -> bool) -> bool {
        // The transition is queued while the value's write lock is held, so
        // the queue's order is the value's order, and a reader that takes a
        // snapshot and subscribes under the read lock misses nothing.
        self.value.send_if_modified(|v| {
            let changed = modify(v);
            if changed {
                // No reader is not an error: D-Bus may not be up yet.
                let _ = self.events.send(v.clone());
            }
            changed
        })
    }

    /// Publish `value` whether or not it differs, returning the old one.
    pub fn send_replace(&self, value: T) -> T {
        let mut old = None;
        self.send_if_modified(|v| {
            old = Some(std::mem::replace(v, value));
            true
        });
        match old {
            Some(old) => old,
            // send_if_modified always runs its closure.
            None => unreachable!("send_if_modified did not run its closure"),
        }
    }

    /// The current value.
    pub fn borrow(&self) -> watch::Ref<'_, T> {
        self.value.borrow()
    }

    /// A new reader, with the current value marked seen.
    pub fn subscribe(&self) -> Subscriber<T> {
        Subscriber {
            value: self.value.subscribe(),
            events: self.events.downgrade(),
        }
    }
}

impl<T: Clone> Subscriber<T> {
    /// The current value and a queue of every later transition, taken
    /// together so that none falls between them.
    pub fn transitions(&self) -> (T, Transitions<T>) {
        let now = self.value.borrow();
        let events = match self.events.upgrade() {
            Some(tx) => tx.subscribe(),
            // The publisher is gone: a queue that is closed at once.
            None => broadcast::channel(1).1,
        };
        let snapshot = now.clone();
        drop(now);
        let value = self.value.clone();
        (snapshot, Transitions { value, events })
    }
}

impl<T> Clone for Subscriber<T> {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            events: self.events.clone(),
        }
    }
}

impl<T> Deref for Subscriber<T> {
    type Target = watch::Receiver<T>;

    fn deref(&self) -> &Self::Target {
        &self.value
    }
}

impl<T> DerefMut for Subscriber<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.value
    }
}

impl<T: Clone> Transitions<T> {
    /// The next value published, in order; `None` once the publisher is
    /// gone. A reader that fell behind gets the current value instead of
    /// the ones it missed, and a warning says how many.
    pub async fn recv(&mut self) -> Option<T> {
        match self.events.recv().await {
            Ok(v) => Some(v),
            Err(RecvError::Closed) => None,
            Err(RecvError::Lagged(mut missed)) => {
                // Under the read lock nothing new is published, so after
                // the drain the current value is the last transition.
                let now = self.value.borrow();
                loop {
                    match self.events.try_recv() {
                        Ok(_) => missed += 1,
                        Err(TryRecvError::Lagged(n)) => missed += n,
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
                tracing::warn!(
                    "fell {missed} {} changes behind; announcing the current value only",
                    std::any::type_name::<T>()
                );
                Some(now.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_transition_arrives_in_order() {
        let (tx, rx) = channel(0u32);
        let (now, mut seen) = rx.transitions();
        assert_eq!(now, 0);
        tx.send_replace(1);
        tx.send_if_modified(|v| {
            *v = 2;
            true
        });
        // Not published: the producer says nothing changed.
        tx.send_if_modified(|v| {
            *v = 3;
            false
        });
        tx.send_replace(4);
        assert_eq!(seen.recv().await, Some(1));
        assert_eq!(seen.recv().await, Some(2));
        assert_eq!(seen.recv().await, Some(4));
        assert_eq!(*rx.borrow(), 4);
        drop(tx);
        assert_eq!(seen.recv().await, None);
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_the_current_value() {
        let (tx, rx) = channel(0usize);
        let (_, mut seen) = rx.transitions();
        for i in 1..=TRANSITIONS * 3 {
            tx.send_replace(i);
        }
        assert_eq!(seen.recv().await, Some(TRANSITIONS * 3));
        tx.send_replace(7);
        assert_eq!(seen.recv().await, Some(7));
    }

    #[tokio::test]
    async fn the_latest_value_reader_works_like_a_watch() {
        let (tx, rx) = channel("a".to_string());
        let mut rx = rx.clone();
        tx.send_replace("b".into());
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), "b");
        let sub = tx.subscribe();
        assert_eq!(*sub.borrow(), "b");
    }
}

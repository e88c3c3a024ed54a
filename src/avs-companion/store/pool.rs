//! A bounded pool of blocking PostgreSQL connections: at most `max` open
//! at once, a caller waits up to `wait` for one, and a connection that
//! broke is dropped instead of handed out again. Small enough to own, so
//! the store needs no pool crate and its threads.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls};

/// Why no connection could be had.
#[derive(Debug)]
pub(super) enum PoolError {
    /// Connecting failed.
    Connect(postgres::Error),
    /// Every connection stayed busy for the whole wait.
    Busy(Duration),
}

struct Slots {
    idle: Vec<Client>,
    open: usize,
}

/// The pool.
pub(super) struct Pool {
    config: Config,
    max: usize,
    wait: Duration,
    slots: Mutex<Slots>,
    freed: Condvar,
}

/// A connection on loan; back to the pool when dropped.
pub(super) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Present from checkout until drop.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let mut slots = self.pool.slots();
        match self.client.take() {
            Some(c) if !c.is_closed() => slots.idle.push(c),
            _ => slots.open = slots.open.saturating_sub(1),
        }
        drop(slots);
        self.pool.freed.notify_one();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing a blocking client runs its own small runtime, which
        // panics on an async worker (where the service's last store handle
        // may go): close them on a thread of their own there.
        let idle = std::mem::take(&mut self.slots().idle);
        if idle.is_empty() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(idle));
        } else {
            drop(idle);
        }
    }
}

impl Pool {
    /// A pool of at most `max` connections made from `config`.
    pub(super) fn new(config: Config, max: usize, wait: Duration) -> Self {
        Self {
            config,
            max: max.max(1),
            wait,
            slots: Mutex::new(Slots {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        // Two counters and a list: nothing a panic could leave half-done.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection, a new one if fewer than `max` are open, else
    /// the first one given back within the wait.
    pub(super) fn get(&self) -> Result<Conn<'_>, PoolError> {
        let deadline = Instant::now() + self.wait;
        let mut slots = self.slots();
        loop {
            while let Some(c) = slots.idle.pop() {
                if !c.is_closed() {
                    return Ok(Conn {
                        pool: self,
                        client: Some(c),
                    });
                }
                slots.open = slots.open.saturating_sub(1);
            }
            if slots.open < self.max {
                slots.open += 1;
                drop(slots);
                return match self.config.connect(NoTls) {
                    Ok(c) => Ok(Conn {
                        pool: self,
                        client: Some(c),
                    }),
                    Err(e) => {
                        self.slots().open -= 1;
                        self.freed.notify_one();
                        Err(PoolError::Connect(e))
                    }
                };
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(PoolError::Busy(self.wait));
            };
            slots = self
                .freed
                .wait_timeout(slots, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

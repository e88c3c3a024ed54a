//! The request/reply plumbing every actor uses: a bounded command channel,
//! a oneshot reply, and a deadline so a wedged actor turns into an error
//! (and a missed watchdog) instead of a hung caller.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// How long a caller waits for an actor before giving up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Capacity of every actor's command channel: small, because commands come
/// from people and a full queue means the actor is stuck.
pub const MAILBOX: usize = 16;

/// Why a call to an actor failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    /// The actor has stopped (daemon shutting down).
    #[error("the {0} task has stopped; avsd is shutting down or restarting")]
    Gone(&'static str),
    /// The actor did not answer in time.
    #[error("the {0} task did not answer within {1:?}; avsd may be overloaded or wedged")]
    Timeout(&'static str, Duration),
}

/// Send a command built around a reply channel and wait for the answer.
pub async fn call<C, T>(
    name: &'static str,
    tx: &mpsc::Sender<C>,
    timeout: Duration,
    make: impl FnOnce(oneshot::Sender<T>) -> C,
) -> Result<T, ActorError> {
    let (reply, rx) = oneshot::channel();
    let work = async {
        tx.send(make(reply))
            .await
            .map_err(|_| ActorError::Gone(name))?;
        rx.await.map_err(|_| ActorError::Gone(name))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ActorError::Timeout(name, timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_actor_times_out() {
        let (tx, _rx) = mpsc::channel::<oneshot::Sender<()>>(1);
        let err = call("test", &tx, Duration::from_secs(1), |r| r).await;
        assert_eq!(
            err,
            Err(ActorError::Timeout("test", Duration::from_secs(1)))
        );
    }

    #[tokio::test]
    async fn a_stopped_actor_is_gone() {
        let (tx, rx) = mpsc::channel::<oneshot::Sender<()>>(1);
        drop(rx);
        let err = call("test", &tx, REPLY_TIMEOUT, |r| r).await;
        assert_eq!(err, Err(ActorError::Gone("test")));
    }
}

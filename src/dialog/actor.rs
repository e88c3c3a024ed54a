//! The dialog actor's loop.

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{ConnectionState, DialogCommand, DialogError, DialogStatus, Trigger};
use crate::auth::{AuthState, AuthStatus};

pub(super) async fn run(
    auth: watch::Receiver<AuthStatus>,
    connection: watch::Receiver<ConnectionState>,
    status: watch::Sender<DialogStatus>,
    mut rx: mpsc::Receiver<DialogCommand>,
    shutdown: CancellationToken,
) {
    loop {
        let cmd = tokio::select! {
            _ = shutdown.cancelled() => return,
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => return,
            },
        };
        match cmd {
            DialogCommand::Trigger(trigger, reply) => {
                let auth_state = auth.borrow().state;
                let _ = status;
                let _ = reply.send(check(trigger, auth_state, *connection.borrow()));
            }
            DialogCommand::Ping(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// Whether a trigger can act now. `Stop` always can: stopping an idle
/// dialog leaves it idle, which is what the caller asked for.
fn check(
    trigger: Trigger,
    auth: AuthState,
    connection: ConnectionState,
) -> Result<(), DialogError> {
    if trigger == Trigger::Stop {
        return Ok(());
    }
    if auth != AuthState::Authorized {
        return Err(DialogError::NotAuthorized(
            "avsd is not authorized with Amazon yet: run `avsctl login` and finish the login \
             in a browser"
                .to_string(),
        ));
    }
    if connection != ConnectionState::Connected {
        return Err(DialogError::NotConnected(
            "avsd is not connected to Alexa yet; watch Dialog.Connection and try again once it \
             reads `connected`"
                .to_string(),
        ));
    }
    Err(DialogError::NotConnected(
        "this build of avsd cannot stream speech yet; upgrade avsd".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talk_needs_authorization_first_then_a_connection() {
        let down = ConnectionState::Disconnected;
        for t in [Trigger::Tap, Trigger::Hold, Trigger::Release] {
            let unauthorized = check(t, AuthState::Unregistered, down);
            assert!(matches!(unauthorized, Err(DialogError::NotAuthorized(_))));
            let offline = check(t, AuthState::Authorized, down);
            assert!(matches!(offline, Err(DialogError::NotConnected(_))));
        }
        assert_eq!(check(Trigger::Stop, AuthState::Unregistered, down), Ok(()));
    }
}

//! The authorization actor's loop. It owns the session; nobody else writes
//! [`AuthStatus`].

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{AuthCommand, AuthError, AuthState, AuthStatus};
use crate::config::AvsdConfig;

pub(super) struct Actor {
    companion_url: String,
    product_id: String,
    status: watch::Sender<AuthStatus>,
}

impl Actor {
    pub(super) fn new(config: &AvsdConfig, status: watch::Sender<AuthStatus>) -> Self {
        Self {
            companion_url: config.companion.url.clone(),
            product_id: config.device.product_id.clone(),
            status,
        }
    }

    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<AuthCommand>,
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
                AuthCommand::Start(reply) => {
                    let _ = reply.send(self.start());
                }
                AuthCommand::Reset(reply) => {
                    self.publish(AuthStatus::default());
                    let _ = reply.send(());
                }
                AuthCommand::Ping(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }

    fn start(&mut self) -> Result<(), AuthError> {
        let missing = if self.companion_url.is_empty() {
            Some("companion.url")
        } else if self.product_id.is_empty() {
            Some("device.product_id")
        } else {
            None
        };
        let message = match missing {
            Some(key) => format!(
                "cannot register: `{key}` is not set in the config; set it (see the commented \
                 sample /etc/avsd/avsd.toml), restart avsd, then start the login again"
            ),
            None => "cannot register: this build of avsd cannot talk to the companion yet; \
                     upgrade avsd"
                .to_string(),
        };
        self.publish(AuthStatus {
            state: AuthState::Error,
            last_error: message.clone(),
            ..AuthStatus::default()
        });
        Err(AuthError::NotConfigured(message))
    }

    fn publish(&self, next: AuthStatus) {
        self.status.send_if_modified(|cur| {
            let changed = *cur != next;
            *cur = next;
            changed
        });
    }
}

//! systemd notifications (`sd_notify`). Every call is a no-op when
//! `NOTIFY_SOCKET` is unset, so the daemon runs the same outside systemd.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tell systemd we are ready, with a status line a person can act on.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Update the one-line status shown by `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Keep the watchdog fed. Only the main loop calls this, after checking
/// that every actor still answers, so a wedged daemon gets restarted.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// We are shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("Stopping")]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any and if
/// it is meant for this process (`WATCHDOG_PID`).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd through NOTIFY_SOCKET: {e}");
    }
}

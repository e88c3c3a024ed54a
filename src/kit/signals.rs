//! Stopping on a signal, the same way in every program: SIGTERM and SIGINT
//! cancel the shutdown token; SIGHUP is acknowledged and ignored, because
//! no program reloads its config and being killed by it would be worse.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Install the handlers now (so a failure is reported at start-up) and
/// cancel `shutdown` on the first SIGTERM or SIGINT. `program` names the
/// service in the SIGHUP hint (`systemctl restart <program>`).
pub fn watch(program: &'static str, shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); break; }
                _ = int.recv() => { tracing::info!("SIGINT received"); break; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: {program} does not reload its config; \
                                    restart it to apply changes (systemctl restart {program})");
                }
            }
        }
        shutdown.cancel();
    });
    Ok(())
}

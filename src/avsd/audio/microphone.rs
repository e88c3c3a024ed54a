//! The microphone privacy switch: while muted avsd opens no capture device
//! at all (no dialog, no wake word), and Tap and Hold are refused. The
//! switch is kept in the state directory so a muted device stays muted
//! across restarts and power cuts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kit::fsutil;
use kit::published::{self, Publisher, Subscriber};

/// The file in the state directory that holds the switch.
pub const MICROPHONE_FILE: &str = "microphone.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    muted: bool,
}

/// A cheap, cloneable handle on the switch; every clone sees one state.
#[derive(Clone)]
pub struct MicSwitch {
    path: PathBuf,
    state_dir: PathBuf,
    /// Serialises writers so the file and the published value agree.
    tx: Arc<Mutex<Publisher<bool>>>,
    rx: Subscriber<bool>,
}

impl std::fmt::Debug for MicSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MicSwitch(muted={})", *self.rx.borrow())
    }
}

impl MicSwitch {
    /// The switch as saved in `state_dir` (unmuted when nothing was saved).
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(MICROPHONE_FILE);
        let muted = load(&path);
        if muted {
            tracing::info!("the microphone is muted (saved in {})", path.display());
        }
        let (tx, rx) = published::channel(muted);
        Self {
            path,
            state_dir: state_dir.to_path_buf(),
            tx: Arc::new(Mutex::new(tx)),
            rx,
        }
    }

    /// Whether the microphone is muted now, and every change.
    pub fn state(&self) -> Subscriber<bool> {
        self.rx.clone()
    }

    /// Whether the microphone is muted now.
    pub fn is_muted(&self) -> bool {
        *self.rx.borrow()
    }

    /// Mute or unmute. The change takes effect even if it cannot be saved
    /// (a privacy switch must not fail open); that is logged.
    pub fn set_muted(&self, muted: bool) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if *tx.borrow() == muted {
            return;
        }
        let json = serde_json::to_vec(&Saved { muted }).unwrap_or_default();
        if let Err(e) = fsutil::ensure_private_dir(&self.state_dir)
            .and_then(|()| fsutil::write_atomic(&self.path, &json))
        {
            tracing::error!(
                "cannot save the microphone switch in {}: {e}; it is {} now but will be \
                 lost at the next restart (check that the state directory is writable by avsd)",
                self.path.display(),
                if muted { "muted" } else { "on" }
            );
        }
        tracing::info!("microphone {}", if muted { "muted" } else { "on" });
        tx.send_replace(muted);
    }
}

/// The saved switch; an unreadable file counts as muted, since a privacy
/// switch that cannot be read must not turn the microphone on.
fn load(path: &Path) -> bool {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => {
            tracing::error!(
                "cannot read the microphone switch {}: {e}; keeping the microphone muted \
                 (fix the file's permissions, or delete it to turn the microphone on)",
                path.display()
            );
            return true;
        }
    };
    match serde_json::from_str::<Saved>(&text) {
        Ok(s) => s.muted,
        Err(e) => {
            tracing::error!(
                "the microphone switch {} is not valid ({e}); keeping the microphone muted \
                 (run `avsctl mic on` to rewrite it)",
                path.display()
            );
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_survives_a_reload_and_a_corrupt_file_stays_muted() {
        let dir = tempfile::tempdir().unwrap();
        let mic = MicSwitch::load(dir.path());
        assert!(!mic.is_muted());
        mic.set_muted(true);
        assert!(MicSwitch::load(dir.path()).is_muted());
        mic.set_muted(false);
        assert!(!MicSwitch::load(dir.path()).is_muted());
        std::fs::write(dir.path().join(MICROPHONE_FILE), b"{").unwrap();
        assert!(MicSwitch::load(dir.path()).is_muted());
    }
}

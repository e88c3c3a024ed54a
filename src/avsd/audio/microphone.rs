//! The microphone privacy switch: while muted avsd opens no capture device
//! at all (no dialog, no wake word), and Tap and Hold are refused. The
//! switch is kept in the state directory so a muted device stays muted
//! across restarts and power cuts. [`Switch`] is that persisted boolean,
//! also used for the wake word's `Enabled`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kit::fsutil;
use kit::published::{self, Publisher, Subscriber};

/// The file in the state directory that holds the switch.
pub const MICROPHONE_FILE: &str = "microphone.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    on: bool,
}

/// The microphone privacy switch: on means muted.
pub type MicSwitch = Switch;

/// A persisted on/off switch: a cheap, cloneable handle; every clone sees
/// one state.
#[derive(Clone)]
pub struct Switch {
    name: &'static str,
    /// Where it is saved; `None` for a switch kept in memory only.
    path: Option<PathBuf>,
    state_dir: PathBuf,
    /// Serialises writers so the file and the published value agree.
    tx: Arc<Mutex<Publisher<bool>>>,
    rx: Subscriber<bool>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Switch({}={})", self.name, *self.rx.borrow())
    }
}

impl Switch {
    /// The microphone switch as saved in `state_dir` (unmuted when nothing
    /// was saved; muted when the file cannot be read).
    pub fn load(state_dir: &Path) -> Self {
        let mic = Self::load_named(state_dir, "microphone muted", MICROPHONE_FILE, false, true);
        if mic.is_muted() {
            tracing::info!("the microphone is muted (saved in {MICROPHONE_FILE})");
        }
        mic
    }

    /// The switch `name` saved in `file` of `state_dir`: `default` when
    /// nothing was saved, `safe` when the file cannot be read.
    pub fn load_named(
        state_dir: &Path,
        name: &'static str,
        file: &str,
        default: bool,
        safe: bool,
    ) -> Self {
        let path = state_dir.join(file);
        let on = load(&path, name, default, safe);
        let (tx, rx) = published::channel(on);
        Self {
            name,
            path: Some(path),
            state_dir: state_dir.to_path_buf(),
            tx: Arc::new(Mutex::new(tx)),
            rx,
        }
    }

    /// A switch kept in memory only, starting at `on`.
    pub fn in_memory(name: &'static str, on: bool) -> Self {
        let (tx, rx) = published::channel(on);
        Self {
            name,
            path: None,
            state_dir: PathBuf::new(),
            tx: Arc::new(Mutex::new(tx)),
            rx,
        }
    }

    /// The value now, and every change.
    pub fn state(&self) -> Subscriber<bool> {
        self.rx.clone()
    }

    /// The value now (for the microphone: whether it is muted).
    pub fn is_on(&self) -> bool {
        *self.rx.borrow()
    }

    /// Whether the microphone is muted now.
    pub fn is_muted(&self) -> bool {
        self.is_on()
    }

    /// Mute or unmute the microphone.
    pub fn set_muted(&self, muted: bool) {
        self.set(muted);
    }

    /// Turn the switch on or off. The change takes effect even if it cannot
    /// be saved (a privacy switch must not fail open); that is logged.
    pub fn set(&self, on: bool) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if *tx.borrow() == on {
            return;
        }
        let json = serde_json::to_vec(&Saved { on }).unwrap_or_default();
        if let Some(path) = &self.path
            && let Err(e) = fsutil::ensure_private_dir(&self.state_dir)
                .and_then(|()| fsutil::write_atomic(path, &json))
        {
            tracing::error!(
                "cannot save the {} switch in {}: {e}; it is {on} now but will be lost at \
                 the next restart (check that the state directory is writable by avsd)",
                self.name,
                path.display(),
            );
        }
        tracing::info!("{}: {on}", self.name);
        tx.send_replace(on);
    }
}

/// The saved switch; an unreadable file gives `safe`, since a privacy
/// switch that cannot be read must not turn the microphone on.
fn load(path: &Path, name: &str, default: bool, safe: bool) -> bool {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return default,
        Err(e) => {
            tracing::error!(
                "cannot read the {name} switch {}: {e}; using {safe} (fix the file's \
                 permissions, or delete it)",
                path.display()
            );
            return safe;
        }
    };
    match serde_json::from_str::<Saved>(&text) {
        Ok(s) => s.on,
        Err(e) => {
            tracing::error!(
                "the {name} switch {} is not valid ({e}); using {safe} (set it again over \
                 D-Bus or avsctl to rewrite it, or delete the file)",
                path.display()
            );
            safe
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

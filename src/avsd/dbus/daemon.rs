//! `org.avsd.Avs1.Daemon`: what this avsd is, for apps that must work with
//! more than one version: its version and the features it has, so an app
//! checks a feature instead of guessing from a version number or from
//! which calls fail. Both are fixed for the process's life.

use zbus::interface;

/// The Daemon interface object.
pub struct Daemon {
    features: Vec<String>,
}

impl Daemon {
    /// `features`: see [`Daemon::features`].
    pub fn new(features: Vec<String>) -> Self {
        Self { features }
    }
}

#[interface(name = "org.avsd.Avs1.Daemon")]
impl Daemon {
    /// avsd's version, as its version option (`avsd -V`) prints it (for example `0.1.0`).
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// What this avsd has: each D-Bus interface of its object by short
    /// name (`Authorization`, `Dialog`, `Speaker`, `Player`, ...), and
    /// `login:companion` or `login:code`, the login path it is set up for.
    /// Apps test for an entry; entries are only ever added.
    #[zbus(property(emits_changed_signal = "const"))]
    fn features(&self) -> Vec<String> {
        self.features.clone()
    }
}

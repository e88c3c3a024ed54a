//! Who may read the login in progress. `LoginUrl` and `UserCode` let
//! whoever uses them first link the device to their own Amazon account, so
//! they are for root and members of group `avsd` only, like the methods.
//! A bus policy cannot filter `Properties.Get` by property name, so the
//! getters ask the bus who is calling (`GetConnectionCredentials`, which
//! the bus daemon answers from the kernel, not from the caller).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::names::BusName;

/// The group whose members may act on avsd and read its login code.
pub const GROUP: &str = "avsd";

/// How many callers' answers are remembered. A unique name is never
/// reused and its credentials never change, so an answer stays true; the
/// memory is what spares GetAll a second bus round trip (see `allow`).
const REMEMBERED: usize = 32;

/// The callers allowed to read the login code: root, and the members of
/// group `avsd` when that group exists.
#[derive(Debug, Clone)]
pub struct LoginReaders {
    gid: Option<u32>,
    recent: Arc<Mutex<VecDeque<(String, bool)>>>,
}

impl LoginReaders {
    /// Resolve group `avsd` from `/etc/group` now, once; without the group
    /// only root may read the login code.
    pub fn from_system() -> Self {
        let gid = std::fs::read_to_string("/etc/group")
            .ok()
            .and_then(|text| gid_of(&text, GROUP));
        if gid.is_none() {
            tracing::info!(
                "no group `{GROUP}` in /etc/group: only root may read LoginUrl and UserCode \
                 (the package's postinst creates the group; add users to it with \
                 `adduser USER {GROUP}`)"
            );
        }
        Self::with_gid(gid)
    }

    fn with_gid(gid: Option<u32>) -> Self {
        Self {
            gid,
            recent: Arc::default(),
        }
    }

    /// Whether the caller of this message may read the login code. Any
    /// doubt (no sender, the bus not answering) is a no.
    ///
    /// GetAll reads the properties one by one and answers with all of
    /// them; a change announced between two reads is dropped by clients
    /// (zbus discards signals older than the GetAll reply), so the one bus
    /// round trip happens for the first of the two properties and the
    /// other is answered from memory, before any other value is read.
    pub async fn allow(&self, conn: &zbus::Connection, header: Option<&Header<'_>>) -> bool {
        let Some(sender) = header.and_then(|h| h.sender()) else {
            return false;
        };
        if let Some(known) = self.remembered(sender.as_str()) {
            return known;
        }
        let dbus = match DBusProxy::new(conn).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot ask the bus who reads the login code: {e}");
                return false;
            }
        };
        let creds = match dbus
            .get_connection_credentials(BusName::Unique(sender.to_owned()))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("the bus did not say who reads the login code ({sender}): {e}");
                return false;
            }
        };
        let groups = creds.unix_group_ids().map(Vec::as_slice).unwrap_or(&[]);
        let allowed = self.permits(creds.unix_user_id(), groups);
        self.remember(sender.as_str(), allowed);
        allowed
    }

    fn remembered(&self, sender: &str) -> Option<bool> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().find(|(s, _)| s == sender).map(|(_, a)| *a)
    }

    fn remember(&self, sender: &str, allowed: bool) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= REMEMBERED {
            recent.pop_front();
        }
        recent.push_back((sender.to_string(), allowed));
    }

    /// The rule itself: root, or a member of group `avsd`.
    fn permits(&self, uid: Option<u32>, groups: &[u32]) -> bool {
        uid == Some(0) || self.gid.is_some_and(|gid| groups.contains(&gid))
    }
}

/// The gid of `name` in an `/etc/group`-format text.
fn gid_of(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        fields.nth(1)?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_found_by_its_exact_name() {
        let text = "root:x:0:\navsdx:x:5:\navsd:x:998:pi,kiosk\nnogroup:x:65534:\n";
        assert_eq!(gid_of(text, "avsd"), Some(998));
        assert_eq!(gid_of("root:x:0:\n", "avsd"), None);
        assert_eq!(gid_of("avsd:x:notanumber:\n", "avsd"), None);
    }

    #[test]
    fn answers_are_remembered_for_a_few_callers_only() {
        let r = LoginReaders::with_gid(None);
        r.remember(":1.1", true);
        for i in 2..=REMEMBERED + 1 {
            r.remember(&format!(":1.{i}"), false);
        }
        assert_eq!(r.remembered(":1.1"), None, "the oldest is forgotten");
        assert_eq!(r.remembered(":1.2"), Some(false));
    }

    #[test]
    fn only_root_and_the_group_may_read() {
        let with = LoginReaders::with_gid(Some(998));
        assert!(with.permits(Some(0), &[]));
        assert!(with.permits(Some(1000), &[100, 998]));
        assert!(!with.permits(Some(65534), &[65534]));
        assert!(!with.permits(None, &[]));
        let without = LoginReaders::with_gid(None);
        assert!(without.permits(Some(0), &[]));
        assert!(!without.permits(Some(1000), &[998]));
    }
}

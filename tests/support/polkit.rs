//! A stand-in for polkitd's Authority (`org.freedesktop.PolicyKit1`) on
//! the private bus, for avsd's side of the polkit check. Real polkitd
//! cannot decide `allow_active` here: that needs systemd-logind to say
//! which session is active, and this machine (and CI) is not booted with
//! systemd; polkitd also reads actions only from the system-wide
//! /usr/share/polkit-1/actions. So the stand-in does what polkitd does for
//! a `system-bus-name` subject: it asks the bus for the name's uid (the
//! caller cannot claim another), reads the shipped action file
//! (`debian/org.avsd.Avs1.policy`), refuses actions it does not declare
//! as polkitd does, and authorizes when the action says
//! `allow_active=yes` and the uid is one the test declared "at the active
//! session".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zbus::fdo::DBusProxy;
use zbus::interface;
use zbus::names::BusName;
use zbus::zvariant::OwnedValue;

use crate::{Bus, repo};

/// The polkit name the stand-in owns.
pub const NAME: &str = "org.freedesktop.PolicyKit1";

/// One CheckAuthorization as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The action asked about.
    pub action: String,
    /// The subject's bus name.
    pub name: String,
    /// Its uid, as the bus said.
    pub uid: u32,
    /// The flags (1: the caller allowed interaction).
    pub flags: u32,
    /// The answer given.
    pub authorized: bool,
}

struct Authority {
    /// action id to its `allow_active` default, from the shipped file.
    actions: HashMap<String, String>,
    active: Arc<Mutex<Vec<u32>>>,
    checks: Arc<Mutex<Vec<Check>>>,
}

#[interface(name = "org.freedesktop.PolicyKit1.Authority")]
impl Authority {
    async fn check_authorization(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        subject: (String, HashMap<String, OwnedValue>),
        action_id: String,
        _details: HashMap<String, String>,
        flags: u32,
        _cancellation_id: String,
    ) -> zbus::fdo::Result<(bool, bool, HashMap<String, String>)> {
        let (kind, details) = subject;
        if kind != "system-bus-name" {
            return Err(zbus::fdo::Error::InvalidArgs(format!(
                "the stand-in knows system-bus-name subjects only, not {kind}"
            )));
        }
        let name = details
            .get("name")
            .and_then(|v| String::try_from(v.clone()).ok())
            .ok_or_else(|| zbus::fdo::Error::InvalidArgs("subject without a name".into()))?;
        let Some(allow_active) = self.actions.get(&action_id) else {
            return Err(zbus::fdo::Error::Failed(format!(
                "Action {action_id} is not registered"
            )));
        };
        let bus_name = BusName::try_from(name.as_str())
            .map_err(|e| zbus::fdo::Error::InvalidArgs(e.to_string()))?;
        let uid = DBusProxy::new(conn)
            .await?
            .get_connection_unix_user(bus_name)
            .await?;
        let authorized = allow_active == "yes" && self.active.lock().unwrap().contains(&uid);
        self.checks.lock().unwrap().push(Check {
            action: action_id,
            name,
            uid,
            flags,
            authorized,
        });
        Ok((authorized, false, HashMap::new()))
    }
}

/// The stand-in, serving while it lives.
pub struct StandIn {
    checks: Arc<Mutex<Vec<Check>>>,
    active: Arc<Mutex<Vec<u32>>>,
    _conn: zbus::Connection,
}

impl StandIn {
    /// Own `org.freedesktop.PolicyKit1` on `bus`; `active` are the uids at
    /// the active local session.
    pub async fn start(bus: &Bus, active: &[u32]) -> StandIn {
        let checks = Arc::new(Mutex::new(Vec::new()));
        let active = Arc::new(Mutex::new(active.to_vec()));
        let authority = Authority {
            actions: shipped_actions(),
            active: active.clone(),
            checks: checks.clone(),
        };
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .serve_at("/org/freedesktop/PolicyKit1/Authority", authority)
            .unwrap()
            .name(NAME)
            .unwrap()
            .build()
            .await
            .expect("the test bus lets the test user own org.freedesktop.PolicyKit1");
        StandIn {
            checks,
            active,
            _conn: conn,
        }
    }

    /// Change who is at the active local session.
    pub fn set_active(&self, uids: &[u32]) {
        *self.active.lock().unwrap() = uids.to_vec();
    }

    /// Every check so far.
    pub fn checks(&self) -> Vec<Check> {
        self.checks.lock().unwrap().clone()
    }
}

/// The actions of `debian/org.avsd.Avs1.policy` and their `allow_active`.
pub fn shipped_actions() -> HashMap<String, String> {
    let text = std::fs::read_to_string(repo().join("debian/org.avsd.Avs1.policy"))
        .expect("debian/org.avsd.Avs1.policy");
    let mut out = HashMap::new();
    for block in text.split("<action id=\"").skip(1) {
        let id = block.split('"').next().unwrap().to_string();
        let active = block
            .split("<allow_active>")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .unwrap_or("no")
            .to_string();
        out.insert(id, active);
    }
    out
}

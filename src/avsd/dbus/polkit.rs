//! Who may press the buttons: root and group `avsd` always (the bus
//! policy and `access` know them without asking anyone), and, as on a
//! desktop (timedated, power-profiles-daemon), whoever polkit authorizes
//! for the button's action; the shipped actions
//! (`debian/org.avsd.Avs1.policy`) say `allow_active=yes`: the user at the
//! active local session. The bus policy lets everyone send the button
//! methods, so this check in avsd is what keeps other users out.
//!
//! polkit is asked about the caller's unique bus name (`system-bus-name`
//! subject): polkitd itself asks the bus who that is, so the caller cannot
//! claim to be someone else. No answer from polkit is a refusal.

use std::collections::HashMap;
use std::time::Duration;

use zbus::message::{Flags, Header};
use zbus::zvariant::Value;

use super::AvsError;
use super::access::LoginReaders;

/// The polkit action of the talk buttons (Dialog's Tap, Hold, Release,
/// Stop).
pub const TALK: &str = "org.avsd.Avs1.talk";
/// The polkit action of the media buttons (Player's Play, Pause,
/// PlayPause, Next, Previous).
pub const MEDIA: &str = "org.avsd.Avs1.media";

const AUTHORITY: &str = "org.freedesktop.PolicyKit1";
const AUTHORITY_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const AUTHORITY_IFACE: &str = "org.freedesktop.PolicyKit1.Authority";
/// CheckAuthorization's flag that lets polkit ask the user (a password
/// dialog), passed on only when the caller allowed it on its call.
const ALLOW_USER_INTERACTION: u32 = 1;
/// How long polkit may take: a quick rule check, or a person typing a
/// password when the caller allowed interaction.
const QUICK: Duration = Duration::from_secs(10);
const INTERACTIVE: Duration = Duration::from_secs(120);

/// The check in front of the buttons.
#[derive(Debug, Clone)]
pub struct Gate {
    members: LoginReaders,
}

impl Gate {
    /// Root and group avsd as `members` says; everyone else through polkit.
    pub fn new(members: LoginReaders) -> Self {
        Self { members }
    }

    /// Ok when the caller of this message may do `action`, else
    /// `NotPermitted` saying why and what to do.
    pub async fn check(
        &self,
        conn: &zbus::Connection,
        header: &Header<'_>,
        action: &str,
    ) -> Result<(), AvsError> {
        if self.members.allow(conn, Some(header)).await {
            return Ok(());
        }
        let Some(sender) = header.sender() else {
            return Err(AvsError::NotPermitted(
                "the call has no sender; only root and group avsd may do this".into(),
            ));
        };
        let interactive = header
            .primary()
            .flags()
            .contains(Flags::AllowInteractiveAuth);
        match ask(conn, sender.as_str(), action, interactive).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::info!("polkit did not authorize {action} for {sender}");
                Err(AvsError::NotPermitted(format!(
                    "polkit did not authorize {action}: only the user of the active local \
                     session, root and members of group avsd may do this (sudo adduser USER \
                     avsd, then log in again)"
                )))
            }
            Err(why) => {
                tracing::warn!("cannot ask polkit about {action} for {sender}: {why}");
                Err(AvsError::NotPermitted(format!(
                    "cannot ask polkit whether this caller may do {action} ({why}); root and \
                     members of group avsd may without polkit (sudo adduser USER avsd), others \
                     need polkitd running (apt-get install polkitd)"
                )))
            }
        }
    }
}

/// polkit's answer for `name` and `action`: authorized or not, or why
/// polkit could not be asked.
async fn ask(
    conn: &zbus::Connection,
    name: &str,
    action: &str,
    interactive: bool,
) -> Result<bool, String> {
    let subject_details: HashMap<&str, Value<'_>> = HashMap::from([("name", Value::from(name))]);
    let subject = ("system-bus-name", subject_details);
    let details: HashMap<&str, &str> = HashMap::new();
    let (flags, limit) = if interactive {
        (ALLOW_USER_INTERACTION, INTERACTIVE)
    } else {
        (0, QUICK)
    };
    let body = (subject, action, details, flags, "");
    let call = conn.call_method(
        Some(AUTHORITY),
        AUTHORITY_PATH,
        Some(AUTHORITY_IFACE),
        "CheckAuthorization",
        &body,
    );
    let reply = match tokio::time::timeout(limit, call).await {
        Err(_) => return Err(format!("no answer within {} s", limit.as_secs())),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(reply)) => reply,
    };
    let (authorized, _challenge, _details): (bool, bool, HashMap<String, String>) = reply
        .body()
        .deserialize()
        .map_err(|e| format!("an answer of the wrong shape: {e}"))?;
    Ok(authorized)
}

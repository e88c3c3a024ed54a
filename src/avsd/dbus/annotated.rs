//! The allowed values of the enumerated string properties (State,
//! LastErrorReason, PlaybackStatus, …), as `org.avsd.Avs1.AllowedValues`
//! annotations in the introspection, so that apps and code generators see
//! the closed set without reading the docs.
//!
//! zbus's `#[interface]` writes only its own annotations, so `Annotated`
//! wraps a generated interface, hands every call through unchanged, and
//! adds the annotations when the interface writes its introspection. The
//! `Interface` trait is declared with async-trait; zbus re-exports that
//! macro for its own generated code, and this wrapper uses the same one so
//! the signatures match whatever zbus version is locked.

use std::collections::HashMap;
use std::fmt::Write;

use zbus::message::{Header, Message};
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult2, Interface, SignalEmitter};
use zbus::zvariant::{OwnedValue, Value};
use zbus::{Connection, ObjectServer, fdo};

use crate::auth::AuthReason;
use crate::dialog::DialogReason;

/// The annotation's name; its value lists the allowed values, separated
/// by one space (no value contains a space).
pub const ALLOWED_VALUES: &str = "org.avsd.Avs1.AllowedValues";

/// Property name and its allowed values, per interface.
pub type Allowed = &'static [(&'static str, fn() -> Vec<&'static str>)];

/// Authorization's enumerated properties.
pub const AUTHORIZATION: Allowed = &[
    ("State", || {
        vec!["unregistered", "waiting-for-user", "authorized", "error"]
    }),
    ("Method", || vec!["companion", "code"]),
    ("LastErrorReason", || {
        AuthReason::ALL.iter().map(|r| r.as_str()).collect()
    }),
];

/// Dialog's enumerated properties.
pub const DIALOG: Allowed = &[
    ("State", || {
        vec!["idle", "listening", "thinking", "speaking"]
    }),
    ("Connection", || {
        vec!["disconnected", "connecting", "connected"]
    }),
    ("LastErrorReason", || {
        DialogReason::ALL.iter().map(|r| r.as_str()).collect()
    }),
];

/// Player's enumerated properties (MPRIS2's values).
pub const PLAYER: Allowed = &[("PlaybackStatus", || vec!["Playing", "Paused", "Stopped"])];

/// A served interface with `ALLOWED_VALUES` annotations on some of its
/// properties; everything else is the inner interface's.
pub struct Annotated<I> {
    inner: I,
    allowed: Allowed,
}

impl<I> Annotated<I> {
    /// Wrap `inner`, annotating the properties `allowed` names.
    pub fn new(inner: I, allowed: Allowed) -> Self {
        Self { inner, allowed }
    }
}

/// `xml` (one interface's introspection) with the annotations added: a
/// property written as one empty element is opened up to hold it.
fn annotate(xml: &str, allowed: Allowed) -> String {
    let mut out = String::with_capacity(xml.len() + 256);
    for line in xml.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let found = allowed
            .iter()
            .find(|(name, _)| trimmed.starts_with(&format!("<property name=\"{name}\" ")));
        let Some((_, values)) = found else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let annotation = format!(
            "{indent}  <annotation name=\"{ALLOWED_VALUES}\" value=\"{}\"/>\n",
            values().join(" ")
        );
        if let Some(open) = trimmed.strip_suffix("/>") {
            let _ = write!(
                out,
                "{indent}{}>\n{annotation}{indent}</property>\n",
                open.trim_end()
            );
        } else {
            out.push_str(line);
            out.push('\n');
            out.push_str(&annotation);
        }
    }
    out
}

#[zbus::export::async_trait::async_trait]
impl<I: Interface> Interface for Annotated<I> {
    fn name() -> InterfaceName<'static> {
        I::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.inner.spawn_tasks_for_methods()
    }

    async fn get(
        &self,
        property_name: &str,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<fdo::Result<OwnedValue>> {
        self.inner
            .get(property_name, server, connection, header, emitter)
            .await
    }

    async fn get_all(
        &self,
        object_server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> fdo::Result<HashMap<String, OwnedValue>> {
        self.inner
            .get_all(object_server, connection, header, emitter)
            .await
    }

    fn set<'call>(
        &'call self,
        property_name: &'call str,
        value: &'call Value<'_>,
        object_server: &'call ObjectServer,
        connection: &'call Connection,
        header: Option<&'call Header<'_>>,
        emitter: &'call SignalEmitter<'_>,
    ) -> DispatchResult2<'call> {
        self.inner.set(
            property_name,
            value,
            object_server,
            connection,
            header,
            emitter,
        )
    }

    async fn set_mut(
        &mut self,
        property_name: &str,
        value: &Value<'_>,
        object_server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<fdo::Result<()>> {
        self.inner
            .set_mut(
                property_name,
                value,
                object_server,
                connection,
                header,
                emitter,
            )
            .await
    }

    fn call<'call>(
        &'call self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult2<'call> {
        self.inner.call(server, connection, msg, name)
    }

    fn call_mut<'call>(
        &'call mut self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult2<'call> {
        self.inner.call_mut(server, connection, msg, name)
    }

    fn introspect_to_writer(&self, writer: &mut dyn std::fmt::Write, level: usize) {
        let mut mine = String::new();
        self.inner.introspect_to_writer(&mut mine, level);
        let _ = writer.write_str(&annotate(&mine, self.allowed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthState;
    use crate::avs::connection::ConnectionState;
    use crate::dialog::DialogState;

    fn values(allowed: Allowed, name: &str) -> Vec<&'static str> {
        allowed
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v())
            .unwrap_or_default()
    }

    #[test]
    fn every_state_the_code_has_is_allowed() {
        let auth = values(AUTHORIZATION, "State");
        for s in [
            AuthState::Unregistered,
            AuthState::WaitingForUser,
            AuthState::Authorized,
            AuthState::Error,
        ] {
            assert!(auth.contains(&s.as_str()), "{}", s.as_str());
        }
        let dialog = values(DIALOG, "State");
        for s in [
            DialogState::Idle,
            DialogState::Listening,
            DialogState::Thinking,
            DialogState::Speaking,
        ] {
            assert!(dialog.contains(&s.as_str()), "{}", s.as_str());
        }
        let link = values(DIALOG, "Connection");
        for s in [
            ConnectionState::Disconnected,
            ConnectionState::Connecting,
            ConnectionState::Connected,
        ] {
            assert!(link.contains(&s.as_str()), "{}", s.as_str());
        }
    }

    #[test]
    fn reasons_are_kebab_case_and_distinct() {
        for allowed in [AUTHORIZATION, DIALOG] {
            let reasons = values(allowed, "LastErrorReason");
            assert_eq!(reasons[0], "none");
            for r in &reasons {
                assert!(r.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{r}");
                assert_eq!(reasons.iter().filter(|x| x == &r).count(), 1, "{r}");
            }
        }
    }

    #[test]
    fn annotations_open_empty_properties_and_join_existing_ones() {
        let xml = "  <interface name=\"x\">\n    <property name=\"State\" type=\"s\" access=\"read\"/>\n    <property name=\"Method\" type=\"s\" access=\"read\">\n      <annotation name=\"a\" value=\"b\"/>\n    </property>\n    <property name=\"StateX\" type=\"s\" access=\"read\"/>\n  </interface>\n";
        let out = annotate(xml, AUTHORIZATION);
        assert!(out.contains(
            "    <property name=\"State\" type=\"s\" access=\"read\">\n      <annotation name=\"org.avsd.Avs1.AllowedValues\" value=\"unregistered waiting-for-user authorized error\"/>\n    </property>\n"
        ), "{out}");
        assert!(out.contains(
            "access=\"read\">\n      <annotation name=\"org.avsd.Avs1.AllowedValues\" value=\"companion code\"/>\n      <annotation name=\"a\""
        ), "{out}");
        assert!(
            out.contains("<property name=\"StateX\" type=\"s\" access=\"read\"/>"),
            "{out}"
        );
    }
}

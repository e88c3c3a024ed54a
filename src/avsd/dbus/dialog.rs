//! `org.avsd.Avs1.Dialog`: a facade over the dialog actor.

use zbus::interface;
use zbus::message::Header;

use super::AvsError;
use super::polkit::{Gate, TALK};
use crate::agents::alerts::AlertsHandle;
use crate::dialog::{DialogError, DialogHandle, Trigger};

/// The Dialog interface object.
pub struct Dialog {
    dialog: DialogHandle,
    alerts: Option<AlertsHandle>,
    gate: Gate,
}

impl Dialog {
    /// Wrap a handle to the dialog actor; `gate` says who may press.
    pub fn new(dialog: DialogHandle, gate: Gate) -> Self {
        Self {
            dialog,
            alerts: None,
            gate,
        }
    }

    /// Stop also silences a ringing alert: the Stop the user already has.
    pub fn with_alerts(mut self, alerts: AlertsHandle) -> Self {
        self.alerts = Some(alerts);
        self
    }
}

#[interface(name = "org.avsd.Avs1.Dialog")]
impl Dialog {
    /// Start a NEAR_FIELD Recognize (initiator TAP); AVS ends it.
    async fn tap(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AvsError> {
        self.gate.check(conn, &header, TALK).await?;
        Ok(self.dialog.trigger(Trigger::Tap).await?)
    }

    /// Start a CLOSE_TALK Recognize (initiator PRESS_AND_HOLD).
    async fn hold(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AvsError> {
        self.gate.check(conn, &header, TALK).await?;
        Ok(self.dialog.trigger(Trigger::Hold).await?)
    }

    /// End the CLOSE_TALK Recognize started by Hold.
    async fn release(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AvsError> {
        self.gate.check(conn, &header, TALK).await?;
        match self.dialog.trigger(Trigger::Release).await {
            // Without a token or a connection no Hold can be in progress,
            // so there is nothing to release: success, as the contract says
            // of Release with no Hold (a button's key-up must not fail).
            Err(DialogError::NotAuthorized(_) | DialogError::NotConnected(_)) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Stop listening or speaking now, and silence a ringing alert.
    async fn stop(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AvsError> {
        self.gate.check(conn, &header, TALK).await?;
        // The alert first: it must go quiet even if the dialog is busy.
        if let Some(alerts) = &self.alerts {
            alerts.stop().await?;
        }
        Ok(self.dialog.trigger(Trigger::Stop).await?)
    }

    /// `idle`, `listening`, `thinking` or `speaking`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.dialog.status().borrow().state.as_str().to_string()
    }

    /// The last problem with a dialog (microphone, speaker, Alexa's
    /// answer), in words a person can act on; empty when none.
    #[zbus(property)]
    fn last_error(&self) -> String {
        self.dialog.status().borrow().last_error.clone()
    }

    /// Why LastError says what it says, for programs: one of the values
    /// in this property's `org.avsd.Avs1.AllowedValues` annotation
    /// (`none` when LastError is empty; more values may be added). Changes
    /// with LastError, in the same PropertiesChanged signal.
    #[zbus(property)]
    fn last_error_reason(&self) -> String {
        self.dialog
            .status()
            .borrow()
            .last_error_reason
            .as_str()
            .to_string()
    }

    /// `disconnected`, `connecting` or `connected`.
    #[zbus(property)]
    fn connection(&self) -> String {
        self.dialog.connection().borrow().as_str().to_string()
    }

    /// Reconnect tries drawn from the back-off since it last started over
    /// (after `avs.stable_after_secs` connected); 0 when none.
    #[zbus(property)]
    fn reconnect_attempt(&self) -> u32 {
        self.dialog.reconnect().borrow().attempt
    }

    /// Unix seconds when the next try to connect starts, while avsd waits
    /// out its back-off; 0 otherwise.
    #[zbus(property)]
    fn next_reconnect_at(&self) -> u64 {
        super::signals::unix_secs(self.dialog.reconnect().borrow().next_try_at)
    }
}

//! `org.avsd.Avs1.Authorization`: a facade over the authorization actor.

use zbus::interface;
use zbus::message::Header;

use super::AvsError;
use super::access::LoginReaders;
use crate::auth::AuthHandle;

/// The Authorization interface object.
pub struct Authorization {
    auth: AuthHandle,
    readers: LoginReaders,
}

impl Authorization {
    /// Wrap a handle to the authorization actor; `readers` says who may
    /// read the login code.
    pub fn new(auth: AuthHandle, readers: LoginReaders) -> Self {
        Self { auth, readers }
    }
}

#[interface(name = "org.avsd.Avs1.Authorization")]
impl Authorization {
    /// Begin (or restart) the login: registration with the companion, or
    /// a new code pair from LWA (method `code`).
    async fn start(&self, #[zbus(header)] _header: Header<'_>) -> Result<(), AvsError> {
        Ok(self.auth.start().await?)
    }

    /// Forget the session and tokens; State goes to `unregistered`.
    async fn reset(&self, #[zbus(header)] _header: Header<'_>) -> Result<(), AvsError> {
        Ok(self.auth.reset().await?)
    }

    // LoginUrl and UserCode come first: GetAll reads properties in this
    // order, and only these two wait (for the bus to say who asks), so
    // every value is read after the wait, just before the answer.
    /// The page where the user logs in: the companion's, or Amazon's
    /// verification page (method `code`). Readable by root and
    /// group avsd only (anyone else reads ""); changes are announced by
    /// invalidation, without the value.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    async fn login_url(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> String {
        if !self.readers.allow(conn, header.as_ref()).await {
            return String::new();
        }
        self.auth.status().borrow().login_url.clone()
    }

    /// The code the user enters at that page. Readable by root and
    /// group avsd only (anyone else reads ""); changes are announced by
    /// invalidation, without the value.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    async fn user_code(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> String {
        if !self.readers.allow(conn, header.as_ref()).await {
            return String::new();
        }
        self.auth.status().borrow().user_code.clone()
    }

    /// `unregistered`, `waiting-for-user`, `authorized` or `error`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.auth.status().borrow().state.as_str().to_string()
    }

    /// The login path in use: `companion` or `code` (`[auth] method`).
    #[zbus(property(emits_changed_signal = "const"))]
    fn method(&self) -> String {
        self.auth.method().to_string()
    }

    /// Unix seconds when the access token expires; 0 without one.
    #[zbus(property)]
    fn token_expires_at(&self) -> u64 {
        self.auth.status().borrow().token_expires_at
    }

    /// The last problem, in words a person can act on.
    #[zbus(property)]
    fn last_error(&self) -> String {
        self.auth.status().borrow().last_error.clone()
    }

    /// Why LastError says what it says, for programs: one of the values
    /// in this property's `org.avsd.Avs1.AllowedValues` annotation
    /// (`none` when LastError is empty; more values may be added). Changes
    /// with LastError, in the same PropertiesChanged signal.
    #[zbus(property)]
    fn last_error_reason(&self) -> String {
        self.auth
            .status()
            .borrow()
            .last_error_reason
            .as_str()
            .to_string()
    }
}

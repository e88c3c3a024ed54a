//! `org.avsd.Avs1.Authorization`: a facade over the authorization actor.

use zbus::interface;
use zbus::message::Header;

use super::AvsError;
use crate::auth::AuthHandle;

/// The Authorization interface object.
pub struct Authorization {
    auth: AuthHandle,
}

impl Authorization {
    /// Wrap a handle to the authorization actor.
    pub fn new(auth: AuthHandle) -> Self {
        Self { auth }
    }
}

#[interface(name = "org.avsd.Avs1.Authorization")]
impl Authorization {
    /// Begin (or restart) registration with the companion.
    async fn start(&self, #[zbus(header)] _header: Header<'_>) -> Result<(), AvsError> {
        Ok(self.auth.start().await?)
    }

    /// Forget the session and tokens; State goes to `unregistered`.
    async fn reset(&self, #[zbus(header)] _header: Header<'_>) -> Result<(), AvsError> {
        Ok(self.auth.reset().await?)
    }

    /// `unregistered`, `waiting-for-user`, `authorized` or `error`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.auth.status().borrow().state.as_str().to_string()
    }

    /// The companion page where the user logs in.
    #[zbus(property)]
    fn login_url(&self) -> String {
        self.auth.status().borrow().login_url.clone()
    }

    /// The registration code shown with the URL.
    #[zbus(property)]
    fn user_code(&self) -> String {
        self.auth.status().borrow().user_code.clone()
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
}

//! `[auth]`: which login path gives avsd its LWA token, the companion
//! web service (the default) or code-based linking, and its checks.

use std::path::PathBuf;

use serde::Deserialize;

use kit::strict::Invalid;

/// `[auth]`: the companion (default) or code-based linking.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `companion` (the refresh token stays on the companion) or `code`
    /// (code-based linking; the refresh token lives on this device).
    pub method: String,
    /// The client id of the "Other devices and platforms" security profile
    /// (method `code` only).
    pub client_id: String,
    /// LWA's base URL (method `code` only); a stand-in's in tests.
    pub lwa_url: String,
    /// Extra CA (PEM) to trust for `lwa_url`, e.g. a local stand-in's.
    pub ca_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            method: "companion".to_string(),
            client_id: String::new(),
            lwa_url: "https://api.amazon.com".to_string(),
            ca_file: None,
        }
    }
}

impl AuthConfig {
    /// Whether code-based linking is the login path.
    pub fn is_code(&self) -> bool {
        self.method == "code"
    }

    pub(crate) fn validate(&self, out: &mut Vec<Invalid>) {
        if !["companion", "code"].contains(&self.method.as_str()) {
            out.push(Invalid::new(
                "auth.method",
                format!("`{}` is not a login method", self.method),
                "use \"companion\" (the default: a companion web service holds the refresh \
                 token) or \"code\" (code-based linking: only the Pi and a phone)",
            ));
        }
        if self.is_code() && self.client_id.trim().is_empty() {
            out.push(Invalid::new(
                "auth.client_id",
                "method = \"code\" needs the client id of your security profile",
                "add client_id = \"amzn1.application-oa2-client....\" under [auth]: the client \
                 id of the security profile of type \"Other devices and platforms\" in the \
                 Amazon developer console",
            ));
        }
        if self.client_id.len() > 100 || self.client_id.chars().any(char::is_whitespace) {
            out.push(Invalid::new(
                "auth.client_id",
                "a client id is at most 100 characters, without spaces",
                "copy the client id from the security profile again",
            ));
        }
        match url::Url::parse(&self.lwa_url) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
            _ => out.push(Invalid::new(
                "auth.lwa_url",
                format!("`{}` is not an https:// URL", self.lwa_url),
                "remove the line to use https://api.amazon.com",
            )),
        }
        if let Some(p) = &self.ca_file
            && !p.is_file()
        {
            out.push(Invalid::new(
                "auth.ca_file",
                format!("`{}` does not exist or is not a file", p.display()),
                "fix the path, or remove the line",
            ));
        }
    }
}

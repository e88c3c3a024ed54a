//! What the certificate files avsd.toml names hold (PEM, CAs, a key that
//! belongs to its certificate, dates): a CA file avsd cannot use made it
//! retry forever with `UnknownIssuer` and never name the key.

use super::{AvsdConfig, Invalid};

/// Problems inside the files that exist (a missing file is reported apart).
pub(crate) fn check_contents(config: &AvsdConfig) -> Vec<Invalid> {
    let mut out = Vec::new();
    for (key, path) in [
        ("avs.ca_file", &config.avs.ca_file),
        ("companion.ca_file", &config.companion.ca_file),
        ("auth.ca_file", &config.auth.ca_file),
    ] {
        if let Some(p) = path.as_ref().filter(|p| p.is_file())
            && let Err(p) = https::check::ca_file(p)
        {
            out.push(Invalid::new(key, p.message, p.fix));
        }
    }
    if let (Some(cert), Some(key)) = (&config.companion.client_cert, &config.companion.client_key)
        && cert.is_file()
        && key.is_file()
        && let Err((is_key, p)) = https::check::cert_and_key(cert, key, None)
    {
        let key = if is_key {
            "companion.client_key"
        } else {
            "companion.client_cert"
        };
        out.push(Invalid::new(key, p.message, p.fix));
    }
    out
}

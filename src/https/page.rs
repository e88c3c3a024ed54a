//! The page frame every HTML page of the companion and the LWA stand-in
//! shares: small, readable on a phone, no external assets, every value
//! HTML-escaped. The one inline style sheet is allowed by its hash in the
//! content security policy, so no `unsafe-inline` is needed.

use std::sync::LazyLock;

use base64::Engine;

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1.2rem;\
background:#f6f7f9;color:#1d2330;line-height:1.5}\
main{max-width:28rem;margin:0 auto;background:#fff;border-radius:12px;\
padding:1.4rem;box-shadow:0 1px 4px rgba(0,0,0,.12)}\
h1{font-size:1.4rem;margin:0 0 .8rem}\
dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem .8rem}\
dt{font-weight:600}dd{margin:0;word-break:break-all}\
.button,button{font:inherit;display:block;width:100%;box-sizing:border-box;text-align:center;\
font-size:1.1rem;padding:.8rem;border-radius:8px;border:0;margin:.6rem 0;\
background:#f0a020;color:#111;text-decoration:none;font-weight:600;cursor:pointer}\
button.secondary{background:#dde1e7}\
input{font-family:inherit;font-size:1.3rem;width:100%;box-sizing:border-box;padding:.6rem;\
letter-spacing:.15em;text-transform:uppercase;border:1px solid #aab;border-radius:8px}\
.error{color:#a01818}.ok{color:#176b2c}.hint{color:#555;font-size:.95rem}";

static STYLE_HASH: LazyLock<String> = LazyLock::new(|| {
    let digest = ring::digest::digest(&ring::digest::SHA256, CSS.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
});

/// The content security policy sent with every page.
pub fn csp() -> String {
    csp_with("'self'")
}

/// The policy with another `form-action` source list.
pub fn csp_with(form_action: &str) -> String {
    format!(
        "default-src 'none'; style-src 'sha256-{}'; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'",
        *STYLE_HASH
    )
}

/// Escape text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body` (already escaped HTML).
pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>",
        t = escape(title)
    )
}

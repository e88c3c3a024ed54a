//! The server-rendered pages: small, readable on a phone, no external assets,
//! every value HTML-escaped. The one inline style sheet is allowed by its
//! hash in the content security policy, so no `unsafe-inline` is needed.

use std::sync::LazyLock;

use base64::Engine;

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1.2rem;\
background:#f6f7f9;color:#1d2330;line-height:1.5}\
main{max-width:28rem;margin:0 auto;background:#fff;border-radius:12px;\
padding:1.4rem;box-shadow:0 1px 4px rgba(0,0,0,.12)}\
h1{font-size:1.4rem;margin:0 0 .8rem}\
dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem .8rem}\
dt{font-weight:600}dd{margin:0;word-break:break-all}\
.button,button{display:block;width:100%;box-sizing:border-box;text-align:center;\
font-size:1.1rem;padding:.8rem;border-radius:8px;border:0;margin:.6rem 0;\
background:#f0a020;color:#111;text-decoration:none;font-weight:600;cursor:pointer}\
button.secondary{background:#dde1e7}\
input{font-size:1.3rem;width:100%;box-sizing:border-box;padding:.6rem;\
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

/// `GET /`: where the user types the code the device shows.
pub fn home(problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"error\">{}</p>", escape(p)))
        .unwrap_or_default();
    layout(
        "Link your Alexa device",
        &format!(
            "<h1>Link your Alexa device</h1>{problem}\
             <form method=\"get\" action=\"/\">\
             <label for=\"code\">Code shown by your device</label>\
             <input id=\"code\" name=\"code\" autocomplete=\"off\" autocapitalize=\"characters\" \
             spellcheck=\"false\" maxlength=\"16\" required>\
             <button type=\"submit\">Continue</button></form>\
             <p class=\"hint\">The code is on the device's screen or in its log, \
             for example ABCD-2345. It works for a few minutes.</p>"
        ),
    )
}

/// `GET /provision/{regCode}`: which device is being linked, and the button.
pub fn device(reg_code: &str, product_id: &str, dsn: &str, login_url: &str) -> String {
    layout(
        "Link this device",
        &format!(
            "<h1>Link this device to your Amazon account</h1>\
             <dl><dt>Product</dt><dd id=\"product\">{p}</dd>\
             <dt>Serial</dt><dd id=\"dsn\">{d}</dd>\
             <dt>Code</dt><dd id=\"code\">{c}</dd></dl>\
             <p>Check that this is your device, then sign in with Amazon \
             to let it use Alexa.</p>\
             <a class=\"button\" id=\"login\" href=\"{u}\">Login with Amazon</a>\
             <p class=\"hint\">Not your device? Close this page.</p>",
            p = escape(product_id),
            d = escape(dsn),
            c = escape(&display_code(reg_code)),
            u = escape(login_url)
        ),
    )
}

/// The page after a successful link.
pub fn success(product_id: &str, dsn: &str) -> String {
    layout(
        "Device linked",
        &format!(
            "<h1 class=\"ok\" id=\"result\">Device linked</h1>\
             <p>Your {p} (serial {d}) can now use Alexa. \
             It picks up its access within a few seconds; you can close this page.</p>",
            p = escape(product_id),
            d = escape(dsn)
        ),
    )
}

/// A page that says what went wrong and what to do next.
pub fn failure(title: &str, what: &str, todo: &str) -> String {
    layout(
        title,
        &format!(
            "<h1 class=\"error\" id=\"result\">{t}</h1><p>{w}</p><p><strong>What to do:</strong> {d}</p>\
             <p><a href=\"/\">Enter a code</a></p>",
            t = escape(title),
            w = escape(what),
            d = escape(todo)
        ),
    )
}

/// A registration code as shown to people: `ABCD-EFGH`.
pub fn display_code(code: &str) -> String {
    if code.len() == 8 && code.is_ascii() {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let page = device("ABCDEFGH", "<script>", "\"x", "https://l/?a=1&b=2");
        assert!(!page.contains("<script>"));
        assert!(page.contains("a=1&amp;b=2"));
    }

    #[test]
    fn csp_allows_exactly_the_inline_style() {
        let csp = csp();
        assert!(csp.contains("default-src 'none'"));
        assert!(csp.contains("'sha256-"));
        assert!(!csp.contains("unsafe-inline"));
    }
}

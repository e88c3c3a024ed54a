//! The server-rendered pages of the companion, in the frame of
//! [`https::page`] (escaped values, one hashed style sheet).

pub use https::page::{csp, csp_with, escape, layout};

/// `GET /`: where the user types the code the device shows. With a
/// problem, what was `typed` stays in the field, and the message is tied to
/// it for screen readers (`aria-describedby`, `aria-invalid`).
pub fn home(problem: Option<&str>, typed: &str) -> String {
    let (message, aria) = match problem {
        Some(p) => (
            format!("<p class=\"error\" id=\"code-error\">{}</p>", escape(p)),
            " aria-invalid=\"true\" aria-describedby=\"code-error code-hint\"",
        ),
        None => (String::new(), " aria-describedby=\"code-hint\""),
    };
    layout(
        "Link your Alexa device",
        &format!(
            "<h1>Link your Alexa device</h1>\
             <form method=\"get\" action=\"/\">\
             <label for=\"code\">Code shown by your device</label>{message}\
             <input id=\"code\" name=\"code\" value=\"{typed}\" autocomplete=\"off\" \
             autocapitalize=\"characters\" spellcheck=\"false\" maxlength=\"16\" required{aria}>\
             <button type=\"submit\">Continue</button></form>\
             <p class=\"hint\" id=\"code-hint\">The code is 8 letters and digits, like ABCD-2345. \
             The device shows it where you started linking: on its screen, or in the \
             terminal where you ran <code>avsctl login</code>. It works for a few minutes.</p>",
            typed = escape(typed)
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

/// The page after a successful link; `again` when the page was reloaded
/// (the sign-in was already used, by this browser, to link the device).
pub fn success(product_id: &str, dsn: &str, again: bool) -> String {
    let already = if again {
        "<p id=\"again\">This sign-in was already used to link it; there is nothing more to do.</p>"
    } else {
        ""
    };
    layout(
        "Device linked",
        &format!(
            "<h1 class=\"ok\" id=\"result\">Device linked</h1>\
             <p>Your {p} (serial {d}) can now use Alexa. \
             It picks up its access within a few seconds; you can close this page.</p>{already}",
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

//! Small HTTP helpers shared by the companion and the stand-ins: responses
//! with the security headers, bounded body reading, query and cookie parsing.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::{Request, Response};

/// The response type of every handler.
pub type Resp = Response<Full<Bytes>>;

/// Request bodies larger than this are refused; nothing here needs more.
pub const BODY_LIMIT: usize = 16 * 1024;

fn base(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // HTTPS only, for a year: a browser that has been here once never
    // tries plain HTTP (which an attacker on the network could answer).
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    resp
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    base(status, "application/json", value.to_string())
}

/// An HTML page with a strict content security policy.
pub fn html(status: StatusCode, page: String) -> Resp {
    let mut resp = base(status, "text/html; charset=utf-8", page);
    if let Ok(v) = HeaderValue::from_str(&crate::page::csp()) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// A `302 Found` to `location`.
pub fn redirect(location: &str) -> Resp {
    let mut resp = base(StatusCode::FOUND, "text/plain; charset=utf-8", "");
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
            resp
        }
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect target"),
    }
}

/// A plain-text response.
pub fn plain(status: StatusCode, text: &str) -> Resp {
    base(status, "text/plain; charset=utf-8", text.to_string())
}

/// Add a `Set-Cookie` header.
pub fn set_cookie(mut resp: Resp, cookie: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// How long a client may take to send a request body: a body that never
/// ends must not hold a connection (and a file descriptor) forever.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Read the whole body, at most [`BODY_LIMIT`] bytes within [`BODY_TIMEOUT`].
/// Generic over the body so the fuzz target can hand in its own; the
/// servers pass hyper's `Incoming`.
pub async fn read_body<B>(req: Request<B>) -> Result<Bytes, Resp>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body = Limited::new(req.into_body(), BODY_LIMIT).collect();
    match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(_)) => Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large or cut off",
        )),
        Err(_) => Err(plain(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
    }
}

/// Form or query pairs; a key given twice keeps its first value, and the
/// set of keys seen twice is returned so OAuth handlers can refuse them.
pub fn form_pairs(data: &[u8]) -> (HashMap<String, String>, Vec<String>) {
    let mut map = HashMap::new();
    let mut dup = Vec::new();
    for (k, v) in url::form_urlencoded::parse(data) {
        if map.contains_key(k.as_ref()) {
            dup.push(k.into_owned());
        } else {
            map.insert(k.into_owned(), v.into_owned());
        }
    }
    (map, dup)
}

/// The query string of a request as pairs.
pub fn query<B>(req: &Request<B>) -> HashMap<String, String> {
    form_pairs(req.uri().query().unwrap_or("").as_bytes()).0
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Request data made safe for a log line: control characters (a forged
/// newline, an ANSI escape) become `\u{..}` escapes, and it is cut to a
/// length a log line can hold.
pub fn loggable(s: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::with_capacity(s.len().min(MAX));
    for (n, c) in s.chars().enumerate() {
        if n >= MAX {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// `429 Too Many Requests` for a browser, with `Retry-After`.
pub fn too_many(retry_after_secs: u64, page: String) -> Resp {
    let mut resp = html(StatusCode::TOO_MANY_REQUESTS, page);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loggable_escapes_newlines_and_terminal_escapes() {
        assert_eq!(loggable("p\n2026 INFO forged"), "p\\u{a}2026 INFO forged");
        assert_eq!(loggable("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(loggable("plain_id-1"), "plain_id-1");
        assert!(loggable(&"x".repeat(1000)).chars().count() <= 201);
    }
}

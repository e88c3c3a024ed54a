//! Sends fuzzer-made requests through the companion's request handling
//! (`companion::server::route` and the browser and device handlers behind
//! it) and checks every response:
//!
//! - no panic, and a registered HTTP status;
//! - never a 500 (every input is client input and the database works);
//!   502/503 only from `/authresponse` and `/provision/accessToken`, whose
//!   LWA here is unreachable;
//! - the security headers of `http::base` on every response, and the
//!   content security policy on every page;
//! - pages: only the templates' own tags (so every value was escaped) and
//!   links only to `/` or the LWA consent page; JSON bodies parse and
//!   errors carry `error` and `error_description`;
//! - redirects only to a code page, the login cookie only with
//!   `__Host-`, `Secure`, `HttpOnly` and `SameSite=Lax`;
//! - a registration only for an allowed product and DSN, and with mutual
//!   TLS only for the `product:dsn` the client certificate names;
//! - no response carries the client secret or a refresh token.
//!
//! Input: up to four HTTP/1-like requests separated by a line `===`:
//! `METHOD TARGET` on the first line, `Name: value` header lines, an empty
//! line, then the body. `{code}`, `{session}`, `{state}` and `{cookie}` are
//! replaced by the registration code, session id, login state and login
//! cookie that earlier responses of the same input handed out, and
//! `{linked}` by a session linked at start-up, so one input can walk the
//! whole login. Headers starting `x-fuzz-` are the harness's, not sent:
//! `x-fuzz-cert: NAME` uses a companion that requires mutual TLS, with a
//! client certificate naming NAME (repeatable); `x-fuzz-advance: SECS`
//! moves the clock first; `x-fuzz-repeat: N` repeats the body N times (to
//! pass the body limit within libFuzzer's input length);
//! `x-fuzz-body: chunks`, `cut` or `stall` delivers it in 7-byte frames,
//! ends it with an error, or never ends it.
//!
//! The companion runs in-process on a paused tokio clock (the body timeout
//! and LWA retries take no real time), with its real SQLite store in a
//! scratch directory (on /dev/shm when there is one; made once per process,
//! removed at exit) and LWA at https://127.0.0.1:9, where nothing listens.
//!
//! The companion is the `avs-companion` crate, which links no audio,
//! D-Bus or HTTP/2 client: avsd's crate, with those, took 6.5 to 8 minutes
//! to build with fuzzing instrumentation on the 2-core CI machine.

#![no_main]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use avs_companion as companion;
use companion::browser::COOKIE;
use companion::config::CompanionConfig;
use companion::flow::{Clock, Flow, ManualClock};
use companion::lwa_client::LwaClient;
use companion::store::{Session, SqliteStore, Status, Store, StoreHandle, Tokens};
use https::Peer;
use kit::secret::Secret;

const MAX_STEPS: usize = 4;
const AUTHORIZE_URL: &str = "https://127.0.0.1:9/ap/oa";
const CLIENT_SECRET: &str = "fuzz-client-secret-never-shown";
const REFRESH_TOKEN: &str = "fuzz-refresh-token-never-shown";
const LINKED: &str = "fuzz-linked-session-0123456789abcdef";
/// Any DSN of this product may register.
const OPEN_PRODUCT: &str = "fuzz_product";
/// Only these DSNs of this product may.
const LISTED_PRODUCT: &str = "listed_product";
const LISTED_DSNS: [&str; 2] = ["0001", "0002"];

/// The service, built once per process.
struct Harness {
    rt: tokio::runtime::Runtime,
    /// Device routes open to any client.
    open: Flow,
    /// Device routes that require a client certificate.
    mtls: Flow,
    clock: Arc<ManualClock>,
}

fn scratch_dir() -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("avsd-fuzz-companion-{}", std::process::id()))
}

unsafe extern "C" {
    safe fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

extern "C" fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch_dir());
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    https::install_provider();
    let dir = scratch_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    atexit(remove_scratch);

    let db = dir.join("companion.sqlite3");
    let config = companion_config(db.clone(), None);
    // Only whether it is set matters to the handlers.
    let mtls_config = companion_config(db.clone(), Some(dir.join("device-ca.crt")));

    let sqlite = SqliteStore::open(&db).expect("open store");
    let clock = Arc::new(ManualClock::new());
    let now = clock.now();
    let linked = Session {
        id: Secret::new(LINKED),
        reg_code: None,
        product_id: OPEN_PRODUCT.into(),
        dsn: "0001".into(),
        reg_expires_at: now + 600,
        status: Status::Pending,
        interval: 5,
        last_poll_at: None,
        tokens: None,
        version: 0,
    };
    assert!(sqlite.create_session(&linked).expect("create session"));
    let tokens = Tokens {
        access: Secret::new("fuzz-access-token"),
        // Fresh for the first year of fuzzing clock advances; stale after.
        access_expires_at: now + 365 * 24 * 3600,
        refresh: Secret::new(REFRESH_TOKEN),
    };
    assert!(sqlite.link(LINKED, &tokens).expect("link session"));
    let store = StoreHandle::new(Arc::new(sqlite));

    let lwa = LwaClient::new(&config, Secret::new(CLIENT_SECRET)).expect("LWA client");
    let open = Flow::new(Arc::new(config), store.clone(), lwa.clone(), clock.clone());
    let mtls = Flow::new(Arc::new(mtls_config), store, lwa, clock.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    Harness {
        rt,
        open,
        mtls,
        clock,
    }
});

fn companion_config(db: PathBuf, device_ca_file: Option<PathBuf>) -> CompanionConfig {
    let mut config = CompanionConfig::default();
    config.server.device_ca_file = device_ca_file;
    config.lwa.client_id = "amzn1.application-oa2-client.fuzz".into();
    config.lwa.redirect_uri = "https://companion.test:8443/authresponse".into();
    config.lwa.authorize_url = AUTHORIZE_URL.into();
    config.lwa.token_url = "https://127.0.0.1:9/auth/o2/token".into();
    config.lwa.request_timeout_secs = 2;
    config.products.insert(OPEN_PRODUCT.into(), Vec::new());
    config.products.insert(
        LISTED_PRODUCT.into(),
        LISTED_DSNS.iter().map(|d| d.to_string()).collect(),
    );
    config.storage.database = Some(db);
    // Every input comes from one address: limits as low as the defaults
    // would answer most of a run with 429 and reach nothing behind them.
    config.limits.registrations_per_address_per_minute = 10_000;
    config.limits.registrations_per_device_per_minute = 1000;
    config.limits.wrong_codes_per_address_per_minute = 1000;
    config.limits.max_pending_sessions = 1_000_000;
    config
}

/// `FUZZ_TRACE=1` prints each request's route and status, to see what a
/// seed reaches: run the target binary with the seed files as arguments.
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_TRACE").is_some());

/// Tag names the page templates use (outside their tests).
static TEMPLATE_TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let source = [
        include_str!("../../src/https/page.rs"),
        include_str!("../../src/avs-companion/pages.rs"),
    ]
    .map(|s| s.split("#[cfg(test)]").next().unwrap_or(s))
    .join("\n");
    let templates = source.as_str();
    let mut tags: Vec<String> = templates
        .split('<')
        .skip(1)
        .map(tag_name)
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    tags
});

fn tag_name(after_lt: &str) -> String {
    after_lt
        .trim_start_matches('/')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// What earlier responses of this input handed out.
#[derive(Default)]
struct Found {
    code: String,
    session: String,
    state: String,
    cookie: String,
    /// Session id -> `product:dsn`, for the mutual-TLS check.
    owners: HashMap<String, String>,
}

impl Found {
    fn fill(&self, text: &[u8]) -> Vec<u8> {
        let mut out = text.to_vec();
        for (key, value) in [
            ("{code}", self.code.as_str()),
            ("{session}", self.session.as_str()),
            ("{state}", self.state.as_str()),
            ("{cookie}", self.cookie.as_str()),
            ("{linked}", LINKED),
        ] {
            out = replace(&out, key.as_bytes(), value.as_bytes());
        }
        out
    }
}

fn replace(text: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = memchr::memmem::find(rest, from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// How the body arrives.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    /// Whole, then the end.
    Done,
    /// Then an error, as when the client resets the stream.
    Cut,
    /// Then nothing, ever.
    Stall,
}

struct FuzzBody {
    frames: VecDeque<Bytes>,
    ending: Ending,
}

impl Body for FuzzBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        match this.ending {
            Ending::Done => Poll::Ready(None),
            Ending::Cut => Poll::Ready(Some(Err(std::io::Error::other("connection reset")))),
            // The body timeout's timer wakes the task.
            Ending::Stall => Poll::Pending,
        }
    }
}

/// One request of the input, before placeholders are filled in.
struct Step<'a> {
    method: &'a [u8],
    target: &'a [u8],
    headers: Vec<(&'a [u8], &'a [u8])>,
    body: &'a [u8],
}

fn steps(input: &[u8]) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    let mut rest = input;
    while out.len() < MAX_STEPS {
        let (part, next) = match memchr::memmem::find(rest, b"\n===\n") {
            Some(i) => (&rest[..i], Some(&rest[i + 5..])),
            None => (rest, None),
        };
        out.push(step(part));
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    out
}

fn step(part: &[u8]) -> Step<'_> {
    let mut lines = part.split(|b| *b == b'\n');
    let first = trim_cr(lines.next().unwrap_or_default());
    let mut words = first.split(|b| *b == b' ').filter(|w| !w.is_empty());
    let method = words.next().unwrap_or(b"GET");
    let target = words.next().unwrap_or(b"/");
    let mut headers = Vec::new();
    let mut consumed = first.len() + 1;
    for line in lines.by_ref() {
        consumed += line.len() + 1;
        let line = trim_cr(line);
        if line.is_empty() {
            break;
        }
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            let value = &line[colon + 1..];
            let start = value.iter().position(|b| *b != b' ').unwrap_or(value.len());
            headers.push((&line[..colon], &value[start..]));
        }
    }
    let body = part.get(consumed..).unwrap_or_default();
    Step {
        method,
        target,
        headers,
        body,
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fuzz_target!(|input: &[u8]| {
    let h = &*HARNESS;
    let mut found = Found::default();
    for step in steps(input) {
        run(h, &step, &mut found);
    }
});

fn run(h: &Harness, step: &Step<'_>, found: &mut Found) {
    let Ok(method) = Method::from_bytes(step.method) else {
        return;
    };
    // A target hyper would refuse never reaches the router.
    let Ok(uri) = Uri::try_from(found.fill(step.target)) else {
        return;
    };
    let mut req = Request::builder().method(method.clone()).uri(uri.clone());
    let mut cert_names = Vec::new();
    let mut mtls = false;
    let mut repeat = 1;
    let mut ending = Ending::Done;
    let mut chunked = false;
    for (name, value) in &step.headers {
        let value = found.fill(value);
        let text = String::from_utf8_lossy(&value).into_owned();
        match name.to_ascii_lowercase().as_slice() {
            b"x-fuzz-cert" => {
                mtls = true;
                if !text.is_empty() {
                    cert_names.push(text);
                }
            }
            b"x-fuzz-advance" => h.clock.advance(text.parse::<u16>().map_or(0, u64::from)),
            b"x-fuzz-repeat" => repeat = text.parse::<u8>().map_or(1, |n| n.clamp(1, 64)),
            b"x-fuzz-body" => match text.as_str() {
                "chunks" => chunked = true,
                "cut" => ending = Ending::Cut,
                "stall" => ending = Ending::Stall,
                _ => {}
            },
            _ => {
                // hyper refuses a request with a malformed header; leave it out.
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name),
                    HeaderValue::from_bytes(&value),
                ) {
                    req = req.header(n, v);
                }
            }
        }
    }
    let body = found.fill(step.body).repeat(usize::from(repeat));
    let frames: VecDeque<Bytes> = if chunked {
        body.chunks(7).map(Bytes::copy_from_slice).collect()
    } else if body.is_empty() {
        VecDeque::new()
    } else {
        VecDeque::from([Bytes::from(body.clone())])
    };
    let Ok(req) = req.body(FuzzBody { frames, ending }) else {
        return;
    };
    let peer = Peer {
        addr: "192.0.2.7:40000".parse().expect("address"),
        cert_names: cert_names.clone(),
    };
    let flow = if mtls { &h.mtls } else { &h.open };
    let (parts, body_out) = h.rt.block_on(async {
        let resp = companion::server::route(flow, req, &peer).await;
        let (parts, body) = resp.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(never) => match never {},
        };
        (parts, body)
    });

    let path = uri.path();
    let route = format!("{method} {path}");
    if *TRACE {
        eprintln!("{route} -> {}", parts.status);
    }
    check_response(&route, &parts, &body_out);
    let status = parts.status;
    let content_type = header(&parts.headers, "content-type");
    if content_type.starts_with("application/json") {
        let v: Value = serde_json::from_slice(&body_out)
            .unwrap_or_else(|e| panic!("{route}: JSON body does not parse: {e}"));
        check_device(&route, status, &v, &body, mtls, &cert_names, found);
    }
    if status == StatusCode::FOUND && method == Method::GET && path.starts_with("/provision/") {
        remember_login(&parts.headers, &body_out, found);
    }
}

fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn check_response(route: &str, parts: &http::response::Parts, body: &[u8]) {
    let status = parts.status;
    assert!(
        status.canonical_reason().is_some(),
        "{route}: unregistered status {status}"
    );
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{route}: 500 for client input: {}",
        String::from_utf8_lossy(body)
    );
    if status.is_server_error() {
        let lwa_route = route == "GET /authresponse" || route == "POST /provision/accessToken";
        let lwa_status =
            status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE;
        assert!(lwa_route && lwa_status, "{route}: {status}");
    }
    let h = &parts.headers;
    for (name, want) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(header(h, name), want, "{route}: {name}");
    }
    let content_type = header(h, "content-type");
    assert!(!content_type.is_empty(), "{route}: no content-type");
    for leak in [CLIENT_SECRET, REFRESH_TOKEN] {
        let carries = |text: &[u8]| memchr::memmem::find(text, leak.as_bytes()).is_some();
        assert!(
            !carries(body) && !h.values().any(|v| carries(v.as_bytes())),
            "{route}: the response carries a secret"
        );
    }
    if content_type.starts_with("text/html") {
        let csp = header(h, "content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{route}: page without the CSP: {csp:?}"
        );
        let page = std::str::from_utf8(body).expect("pages are UTF-8");
        check_markup(route, page);
    }
    if status == StatusCode::FOUND {
        // The code form goes to a code page; the login button to LWA.
        let location = header(h, "location");
        let code = location.strip_prefix("/provision/").unwrap_or("");
        let consent = format!("{AUTHORIZE_URL}?");
        assert!(
            (code.len() == 8 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
                || location.starts_with(&consent),
            "{route}: redirect to {location:?}"
        );
    }
    for cookie in h.get_all("set-cookie") {
        let cookie = cookie.to_str().expect("ASCII cookie");
        let prefix = format!("{COOKIE}=");
        assert!(cookie.starts_with(&prefix), "{route}: cookie {cookie}");
        for part in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Lax"] {
            assert!(cookie.contains(part), "{route}: cookie {cookie}");
        }
        assert!(!cookie.contains("Domain="), "{route}: cookie {cookie}");
    }
}

/// Every tag is one of the templates' (so every value was escaped), and
/// every link goes to the start page or to a code's login button.
fn check_markup(route: &str, page: &str) {
    for piece in page.split('<').skip(1) {
        let tag = tag_name(piece);
        assert!(
            TEMPLATE_TAGS.contains(&tag),
            "{route}: tag <{tag}> is not the templates': {page}"
        );
    }
    // What a visitor typed comes back only inside `value="…"` (escaped,
    // so its closing quote is the template's): links are looked for
    // outside those values.
    let mut outside = String::with_capacity(page.len());
    let mut rest = page;
    while let Some(at) = rest.find(" value=\"") {
        outside.push_str(&rest[..at]);
        let after = &rest[at + " value=\"".len()..];
        rest = after.find('"').map_or("", |end| &after[end + 1..]);
    }
    outside.push_str(rest);
    for piece in outside.split(" href=\"").skip(1) {
        let href = piece.split('"').next().unwrap_or("");
        let code = href
            .strip_prefix("/provision/")
            .and_then(|r| r.strip_suffix("/login"))
            .unwrap_or("");
        assert!(
            href == "/" || (code.len() == 8 && code.bytes().all(|b| b.is_ascii_alphanumeric())),
            "{route}: link to {href:?}"
        );
    }
}

/// The device side's JSON contract and who may register.
fn check_device(
    route: &str,
    status: StatusCode,
    v: &Value,
    request_body: &[u8],
    mtls: bool,
    cert_names: &[String],
    found: &mut Found,
) {
    if status != StatusCode::OK {
        assert!(
            v["error"].is_string() && v["error_description"].is_string(),
            "{route}: {status} without error and error_description: {v}"
        );
        return;
    }
    let sent: Value = serde_json::from_slice(request_body).unwrap_or(Value::Null);
    match route {
        "POST /provision/regCode" => {
            let product = sent["productId"].as_str().unwrap_or_default();
            let dsn = sent["dsn"].as_str().unwrap_or_default();
            let allowed = product == OPEN_PRODUCT
                || (product == LISTED_PRODUCT && LISTED_DSNS.contains(&dsn));
            assert!(allowed, "{route}: registered {product:?} {dsn:?}");
            let owner = format!("{product}:{dsn}");
            if mtls {
                assert!(
                    cert_names.contains(&owner),
                    "{route}: registered {owner} with a certificate for {cert_names:?}"
                );
            }
            let (Some(code), Some(session)) = (v["regCode"].as_str(), v["sessionId"].as_str())
            else {
                panic!("{route}: 200 without regCode and sessionId: {v}");
            };
            found.code = code.to_string();
            found.session = session.to_string();
            found.owners.insert(session.to_string(), owner);
        }
        "POST /provision/accessToken" => {
            assert!(
                v["access_token"].is_string()
                    && v["token_type"] == "bearer"
                    && v["expires_in"].is_u64(),
                "{route}: {v}"
            );
            let id = sent["sessionId"].as_str().unwrap_or_default();
            let owner = if id == LINKED {
                Some(format!("{OPEN_PRODUCT}:0001"))
            } else {
                found.owners.get(id).cloned()
            };
            if mtls && let Some(owner) = owner {
                assert!(
                    cert_names.contains(&owner),
                    "{route}: token for {owner} with a certificate for {cert_names:?}"
                );
            }
        }
        _ => {}
    }
}

/// From the login button's redirect: the login `state` in the consent URL,
/// and the cookie.
fn remember_login(headers: &http::HeaderMap, _page: &[u8], found: &mut Found) {
    if let Some(location) = headers.get("location").and_then(|v| v.to_str().ok())
        && let Ok(url) = url::Url::parse(location)
        && let Some((_, state)) = url.query_pairs().find(|(k, _)| k == "state")
    {
        found.state = state.into_owned();
    }
    if let Some(value) = headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.strip_prefix(&format!("{COOKIE}=")))
    {
        found.cookie = value.split(';').next().unwrap_or("").to_string();
    }
}

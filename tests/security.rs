//! Issue 10's transport checks: "TLS refuses plain HTTP and old protocol
//! versions", against real servers on port 0 (the companion in-process with
//! `avs-sim lwa` as a process, as the companion tests start them, and
//! `avs-sim avs` in-process).
//!
//! - Plain HTTP to the companion's TLS port gets a readable `400` naming
//!   the `https://` address (from a clean Host header only, never echoing
//!   anything else), then the connection is closed; `avs-sim lwa`, which
//!   shares the accept loop, answers the same.
//! - Plain bytes that are not HTTP are answered or closed, and the
//!   companion goes on serving HTTPS; clients that send nothing, or half a
//!   plain request, are dropped once the handshake deadline passes.
//! - Hand-made TLS 1.0 and TLS 1.1 ClientHellos get a fatal alert
//!   (protocol_version or handshake_failure) and never a ServerHello, from
//!   the companion, `avs-sim lwa` and `avs-sim avs`; the same hello saying
//!   TLS 1.2 does get a ServerHello, so the refusal is about the version.
//! - rustls clients limited to TLS 1.2, and to TLS 1.3, complete a
//!   handshake at that version and get the companion's home page.
//!
//! Other security checks live with the code they test: cookies and
//! security headers in `companion_flow.rs`, a world-readable client secret
//! in `companion_config.rs`, state file modes in `device_auth.rs`, the
//! D-Bus policy in `dbus_api.rs`, secrets kept out of logs in
//! `companion_process.rs` and `device_auth.rs`, malformed and slow HTTP in
//! `faults.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ProtocolVersion, SupportedProtocolVersion};
use support::companion::{Setup, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The servers' deadline for a first byte and a finished handshake
/// (`HANDSHAKE_TIMEOUT` in src/https/serve.rs), and some slack.
const DROPPED_WITHIN: Duration = Duration::from_secs(10 + 10);

/// The `host:port` of an `https://host:port` base URL.
fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{base}: {e}"))
}

/// How a connection ended after the client's bytes were sent.
#[derive(Debug, PartialEq)]
enum End {
    /// The server closed it (EOF).
    Closed,
    /// The server reset it.
    Reset,
}

/// Connect, send `bytes` as they are, and read until the server ends the
/// connection; everything it sent and how it ended. Fails if the server
/// neither answers nor closes within `limit`.
async fn exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Vec<u8>, End) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = tcp.write_all(bytes).await;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => return End::Closed,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return End::Reset,
            }
        }
    };
    let end = tokio::time::timeout(limit, read).await.unwrap_or_else(|_| {
        panic!("{addr}: the connection is still open after {limit:?}; sent {bytes:02x?}")
    });
    (got, end)
}

/// The companion's HTTPS still answers `GET /` with 200.
async fn assert_serving(setup: &Setup, after: &str) {
    let r = setup
        .env
        .client()
        .get(format!("{}/", setup.companion.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("HTTPS after {after}: {e}"));
    assert_eq!(r.status(), 200, "HTTPS after {after}");
}

/// Split a plain-HTTP answer into its head and body, both as text.
fn split_answer(got: &[u8]) -> (String, String) {
    let text = String::from_utf8(got.to_vec())
        .unwrap_or_else(|_| panic!("the answer is not UTF-8: {got:02x?}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    (head.to_string(), body.to_string())
}

/// A plain `GET /` with `host_line` as its Host header line.
fn plain_get(host_line: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\n{host_line}\r\nUser-Agent: test\r\nAccept: text/html\r\n\r\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_gets_a_400_that_names_the_https_address() {
    let setup = Setup::new(&[]).await;
    let addr = addr_of(&setup.companion.base);
    let port = addr.port();
    let cases = [
        (
            "the browser's own Host",
            format!("Host: {addr}"),
            format!("https://{addr}/"),
        ),
        (
            "a name and a port",
            "Host: pi.local:8443".to_string(),
            "https://pi.local:8443/".to_string(),
        ),
        (
            "a name without a port",
            "Host: pi.local".to_string(),
            format!("https://pi.local:{port}/"),
        ),
        (
            "markup in Host",
            "Host: <script>alert(1)</script>".to_string(),
            format!("https:// with port {port}"),
        ),
        (
            "a Host far too long",
            format!("Host: {}.local", "a".repeat(400)),
            format!("https:// with port {port}"),
        ),
        (
            "no Host",
            "X-Nothing: here".to_string(),
            format!("https:// with port {port}"),
        ),
    ];
    for (what, host_line, want) in cases {
        let (got, end) = exchange(addr, &plain_get(&host_line), WAIT).await;
        assert_eq!(end, End::Closed, "{what}: closed with a FIN, not a reset");
        let (head, body) = split_answer(&got);
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 400 Bad Request"), "{what}");
        let headers: Vec<&str> = lines.collect();
        for h in [
            "Connection: close",
            "Content-Type: text/plain; charset=utf-8",
        ] {
            assert!(headers.contains(&h), "{what}: no {h:?} in {headers:?}");
        }
        assert!(
            headers.contains(&format!("Content-Length: {}", body.len()).as_str()),
            "{what}: Content-Length is not the body's length in {headers:?}"
        );
        assert!(
            !headers.iter().any(|h| h.starts_with("Location")),
            "{what}: a redirect"
        );
        assert_eq!(body.lines().count(), 1, "{what}: one line: {body:?}");
        assert!(body.contains("HTTPS"), "{what}: {body:?}");
        assert!(
            body.contains(&want),
            "{what}: {body:?} does not say {want:?}"
        );
        for echoed in ["<", ">", "script", "aaaa", "X-Nothing", "User-Agent"] {
            assert!(
                !got.windows(echoed.len()).any(|w| w == echoed.as_bytes()),
                "{what}: {echoed:?} echoed in {body:?}"
            );
        }
    }

    // avs-sim lwa serves through the same accept loop.
    let lwa = addr_of(&setup.sim.base);
    let (got, end) = exchange(lwa, &plain_get(&format!("Host: {lwa}")), WAIT).await;
    assert_eq!(end, End::Closed);
    let (head, body) = split_answer(&got);
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    assert!(body.contains(&format!("https://{lwa}/")), "{body}");

    assert_serving(&setup, "plain HTTP").await;
    setup.companion.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_bytes_that_are_not_http_are_closed_and_https_goes_on() {
    let setup = Setup::new(&[]).await;
    let addr = addr_of(&setup.companion.base);
    let mut big = vec![b'A'; 64 * 1024];
    big[0] = 0x00;
    let cases: [(&str, Vec<u8>); 6] = [
        (
            "binary garbage",
            b"\x00\x01\x02GARBAGE\xff\xfe\r\n\r\n".to_vec(),
        ),
        ("a lone byte", vec![0x42]),
        (
            "an SSL 2 hello",
            b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10".to_vec(),
        ),
        (
            "a TLS alert record",
            b"\x15\x03\x03\x00\x02\x02\x28".to_vec(),
        ),
        ("64 KiB of junk", big),
        (
            "a lower-case request line",
            b"get / http/1.1\r\nhost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        // Answered (with the same 400) or cut off: either way promptly, and
        // nothing of what was sent comes back.
        let (got, _end) = exchange(addr, &bytes, WAIT).await;
        if !got.is_empty() {
            let (head, body) = split_answer(&got);
            assert!(
                head.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{what}: {head}"
            );
            assert!(body.contains("HTTPS"), "{what}: {body:?}");
            assert!(
                !body.contains("GARBAGE") && !body.contains("AAAA"),
                "{what}: {body:?}"
            );
        }
    }
    // Connecting and hanging up at once.
    drop(TcpStream::connect(addr).await.unwrap());
    assert_serving(&setup, "non-HTTP plain bytes").await;
    setup.companion.stop().await;
}

/// Reading the first byte (and a plain request head) is bounded by the
/// handshake deadline: such clients cannot pile up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_plain_clients_are_dropped() {
    let setup = Setup::new(&[]).await;
    let addr = addr_of(&setup.companion.base);
    let (silent, half) = tokio::join!(
        exchange(addr, b"", DROPPED_WITHIN),
        exchange(addr, b"GET / HTTP/1.1\r\nHost: pi.lo", DROPPED_WITHIN),
    );
    assert_eq!(
        silent.0, b"",
        "nothing is said to a client that said nothing"
    );
    assert_eq!(half.0, b"", "half a head is not answered");
    assert_serving(&setup, "silent clients").await;
    setup.companion.stop().await;
}

// ------------------------------------------------------------ old TLS

const TLS1_0: u16 = 0x0301;
const TLS1_1: u16 = 0x0302;
const TLS1_2: u16 = 0x0303;

/// Append extension `kind` with `data` to `out`.
fn push_extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend(kind.to_be_bytes());
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
}

/// `data` behind its 16-bit length.
fn with_len16(data: &[u8]) -> Vec<u8> {
    [&(data.len() as u16).to_be_bytes()[..], data].concat()
}

/// A ClientHello as a client whose best is `version` sends it: record
/// version 0x0301, `client_version` = `version`, no supported_versions
/// extension (TLS 1.3's way to offer versions), SNI for localhost. A TLS
/// 1.0/1.1 client offers the classic CBC suites; a TLS 1.2 one adds GCM.
fn client_hello(version: u16) -> Vec<u8> {
    let mut suites: Vec<u16> = vec![
        0xc014, // ECDHE_RSA_WITH_AES_256_CBC_SHA
        0xc013, // ECDHE_RSA_WITH_AES_128_CBC_SHA
        0xc00a, // ECDHE_ECDSA_WITH_AES_256_CBC_SHA
        0xc009, // ECDHE_ECDSA_WITH_AES_128_CBC_SHA
        0x0035, // RSA_WITH_AES_256_CBC_SHA
        0x002f, // RSA_WITH_AES_128_CBC_SHA
        0x000a, // RSA_WITH_3DES_EDE_CBC_SHA
    ];
    if version >= TLS1_2 {
        suites.splice(
            0..0,
            [
                0xc02b, // ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                0xc02f, // ECDHE_RSA_WITH_AES_128_GCM_SHA256
                0xc02c, // ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                0xc030, // ECDHE_RSA_WITH_AES_256_GCM_SHA384
            ],
        );
    }
    suites.push(0x00ff); // the renegotiation SCSV
    let suite_bytes: Vec<u8> = suites.iter().flat_map(|s| s.to_be_bytes()).collect();

    let mut ext = Vec::new();
    let name = b"localhost";
    let mut server_name = vec![0]; // host_name
    server_name.extend(with_len16(name));
    push_extension(&mut ext, 0x0000, &with_len16(&server_name));
    // supported_groups: x25519, secp256r1, secp384r1
    push_extension(&mut ext, 0x000a, &with_len16(&[0, 0x1d, 0, 0x17, 0, 0x18]));
    // ec_point_formats: uncompressed
    push_extension(&mut ext, 0x000b, &[1, 0]);
    // signature_algorithms (TLS 1.2's; older clients ignore it):
    // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    push_extension(
        &mut ext,
        0x000d,
        &with_len16(&[0x04, 0x03, 0x08, 0x04, 0x04, 0x01]),
    );

    let mut body = Vec::new();
    body.extend(version.to_be_bytes());
    body.extend([0x5a; 32]); // random
    body.push(0); // no session id
    body.extend(with_len16(&suite_bytes));
    body.extend([1, 0]); // compression: null only
    body.extend(with_len16(&ext));

    let mut handshake = vec![0x01]; // client_hello
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(with_len16(&handshake));
    record
}

/// The TLS records in `bytes`: (content type, payload). Stops at a
/// truncated record.
fn records(bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        let Some(payload) = rest.get(5..5 + len) else {
            break;
        };
        out.push((rest[0], payload));
        rest = &rest[5 + len..];
    }
    out
}

/// Send an old-version hello to `addr`; the server must answer with a
/// fatal protocol_version (70) or handshake_failure (40) alert, send no
/// handshake record at all (so no ServerHello), and close.
async fn assert_refuses_old_tls(server: &str, addr: SocketAddr) {
    for (name, version) in [("TLS 1.0", TLS1_0), ("TLS 1.1", TLS1_1)] {
        let (got, _end) = exchange(addr, &client_hello(version), WAIT).await;
        let records = records(&got);
        assert!(
            !records.iter().any(|(kind, _)| *kind == 0x16),
            "{server} answered a {name} hello with a handshake record (ServerHello): {got:02x?}"
        );
        let alert = records.iter().find(|(kind, _)| *kind == 0x15);
        match alert {
            Some((_, [2, 70])) | Some((_, [2, 40])) => {}
            _ => panic!(
                "{server}: want a fatal protocol_version or handshake_failure alert \
                 for a {name} hello, got {got:02x?}"
            ),
        }
    }
    // The same hello offering TLS 1.2 is taken: the refusal is about the
    // version, not about how the hello was made.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&client_hello(TLS1_2)).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while got.len() < 5 + 6 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{server}: no answer to a TLS 1.2 hello"));
    // A handshake record whose first message is a ServerHello (2) for
    // TLS 1.2 (its length takes bytes 6..9).
    assert!(
        got.len() >= 11 && got[0] == 0x16 && got[5] == 2 && got[9..11] == [0x03, 0x03],
        "{server}: want a TLS 1.2 ServerHello for the control hello, got {got:02x?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_and_1_1_hellos_are_refused_by_every_server() {
    let setup = Setup::new(&[]).await;
    assert_refuses_old_tls("avs-companion", addr_of(&setup.companion.base)).await;
    assert_refuses_old_tls("avs-sim lwa", addr_of(&setup.sim.base)).await;
    let avs = support::sim::Sim::start().await;
    assert_refuses_old_tls("avs-sim avs", addr_of(&avs.base)).await;
    assert_serving(&setup, "old TLS hellos").await;
    setup.companion.stop().await;
}

// ---------------------------------------------------------- modern TLS

/// `GET /` over a client that speaks only `version`; the version the
/// connection settled on and the answer's status line.
async fn get_home_with(
    setup: &Setup,
    version: &'static SupportedProtocolVersion,
) -> (Option<ProtocolVersion>, String) {
    let roots = https::load_roots(&setup.env.ca_file).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(https::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = addr_of(&setup.companion.base);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .unwrap_or_else(|e| panic!("{:?} handshake failed: {e}", version.version));
    let negotiated = tls.get_ref().1.protocol_version();
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    // The answer, then close_notify or EOF.
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut got))
        .await
        .expect("the page in time");
    let text = String::from_utf8_lossy(&got).into_owned();
    (negotiated, text.lines().next().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_tls_1_3_clients_get_the_page() {
    let setup = Setup::new(&[]).await;
    for (version, want) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let (negotiated, status) = get_home_with(&setup, version).await;
        assert_eq!(negotiated, Some(want));
        assert_eq!(status, "HTTP/1.1 200 OK", "over {want:?}");
    }
    setup.companion.stop().await;
}

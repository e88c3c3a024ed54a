//! Plain HTTP on a TLS port. Someone who types `http://pi.local:8443/`
//! into a browser would otherwise see "connection reset"; instead the first
//! byte of every connection is looked at (without taking it), and a client
//! that does not open with a TLS handshake record gets a short plain-text
//! `400 Bad Request` naming the `https://` address to use, then the
//! connection is closed.
//!
//! Not a redirect: anything sent over plain text can be altered on the way,
//! so a redirect would teach browsers to follow an address an attacker may
//! have chosen. nginx answers the same situation with a plain 400 (its 497).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;
/// At most this much of a plain request is read to find its Host header.
const MAX_HEAD: usize = 8 * 1024;
/// Longer methods are taken for "not HTTP" and answered at once.
const MAX_METHOD: usize = 16;
/// A Host value longer than this is left out of the hint: a 253-byte name,
/// or a bracketed IPv6 literal, and `:65535`.
const MAX_HOST: usize = 260;
/// After answering, what the client still sends is read and dropped for up
/// to this long, so the close is a FIN and not a reset that could destroy
/// the answer before the browser shows it.
const LINGER: Duration = Duration::from_secs(2);
/// ... and at most this much of it.
const MAX_LINGER_BYTES: usize = 64 * 1024;
/// Writing the few hundred bytes of the answer must not hang either.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Wait until `deadline` for the client's first byte. A TLS handshake gets
/// the stream back, untouched, for the TLS acceptor. Anything else is
/// answered with the plain-text 400 and closed; a client that says nothing
/// by `deadline`, or hangs up, is dropped. `None` means the connection is
/// done with.
pub(crate) async fn tls_or_answer(
    tcp: TcpStream,
    addr: SocketAddr,
    deadline: Instant,
) -> Option<TcpStream> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1..)) if first[0] == TLS_HANDSHAKE => Some(tcp),
        Ok(Ok(1..)) => {
            answer(tcp, addr, deadline).await;
            None
        }
        Ok(Ok(0)) | Ok(Err(_)) => None,
        Err(_) => {
            tracing::debug!(%addr, "nothing received before the handshake deadline");
            None
        }
    }
}

/// Read the request head (bounded by `deadline` and [`MAX_HEAD`]), answer
/// 400 with the hint, and close.
async fn answer(mut tcp: TcpStream, addr: SocketAddr, deadline: Instant) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let complete = loop {
        if !looks_like_http(&head) {
            break true;
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= MAX_HEAD {
            break true;
        }
        let room = (MAX_HEAD - head.len()).min(buf.len());
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf[..room])).await {
            Ok(Ok(0)) => break !head.is_empty(),
            Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return,
            // A silent or trickling client is dropped like one that never
            // finishes its TLS handshake.
            Err(_) => break false,
        }
    };
    if !complete {
        tracing::debug!(%addr, "plain-text client too slow; closing");
        return;
    }
    let host = looks_like_http(&head).then(|| host_header(&head)).flatten();
    let port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
    let response = response(host.as_deref(), port);
    tracing::debug!(%addr, "plain HTTP on the TLS port; answered 400");
    let sent = async {
        tcp.write_all(&response).await?;
        tcp.shutdown().await
    };
    if !matches!(tokio::time::timeout(WRITE_TIMEOUT, sent).await, Ok(Ok(()))) {
        return;
    }
    let drain = async {
        let mut dropped = 0;
        while dropped < MAX_LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Whether `head` (so far) can be the start of an HTTP request: a method
/// of capital letters, then a space. Anything else is answered at once.
fn looks_like_http(head: &[u8]) -> bool {
    let end = head.iter().position(|&b| b == b' ');
    let method = &head[..end.unwrap_or(head.len())];
    method.len() <= MAX_METHOD
        && method.iter().all(u8::is_ascii_uppercase)
        && (end.is_none() || !method.is_empty())
}

/// The one Host header of a request head, if it is a plausible host or
/// host:port; `None` when missing, repeated or holding anything else.
fn host_header(head: &[u8]) -> Option<String> {
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len());
    let mut hosts = head[..end]
        .split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            line[..colon]
                .eq_ignore_ascii_case(b"host")
                .then(|| line[colon + 1..].trim_ascii())
        });
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return None;
    }
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || b".-:[]".contains(b);
    if host.is_empty() || host.len() > MAX_HOST || !host.iter().all(allowed) {
        return None;
    }
    // Only the allowed ASCII bytes are left, so this cannot fail.
    String::from_utf8(host.to_vec()).ok()
}

/// The whole answer: status, headers and the one-line body.
fn response(host: Option<&str>, port: u16) -> Vec<u8> {
    let body = hint(host, port);
    format!(
        "HTTP/1.1 400 Bad Request\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Cache-Control: no-store\r\n\
         Connection: close\r\n\
         \r\n\
         {body}",
        body.len()
    )
    .into_bytes()
}

/// The body: this port speaks HTTPS; use `https://HOST:PORT/`, or, without
/// a usable Host header, https:// on this port.
fn hint(host: Option<&str>, port: u16) -> String {
    match host {
        Some(host) => {
            let has_port = match host.strip_prefix('[') {
                Some(v6) => v6.contains("]:"),
                None => host.contains(':'),
            };
            // No port in Host means the browser used port 80, which
            // something forwarded here; name the port that speaks HTTPS.
            let address = if has_port || port == 443 {
                host.to_string()
            } else {
                format!("{host}:{port}")
            };
            format!("This port speaks HTTPS, not plain HTTP. Use https://{address}/ instead.\n")
        }
        None => format!(
            "This port speaks HTTPS, not plain HTTP. Use https:// with port {port} instead.\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_is_taken_only_when_it_is_a_clean_host() {
        let head = |h: &str| format!("GET / HTTP/1.1\r\n{h}\r\nAccept: */*\r\n\r\n");
        let host = |h: &str| host_header(head(h).as_bytes());
        assert_eq!(
            host("Host: pi.local:8443").as_deref(),
            Some("pi.local:8443")
        );
        assert_eq!(host("host:\t[::1]:8443 ").as_deref(), Some("[::1]:8443"));
        assert_eq!(host("HOST: 192.168.1.5").as_deref(), Some("192.168.1.5"));
        for bad in [
            "Host: <script>alert(1)</script>",
            "Host: a b",
            "Host: pi.local/evil",
            "Host: pi.local\"",
            "Host: ",
            "X-Host: pi.local",
            "Host: p\u{e9}.local",
            "Host: a\r\nHost: b",
        ] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
        assert_eq!(
            host(&format!("Host: {}", "a".repeat(MAX_HOST)))
                .as_deref()
                .map(str::len),
            Some(MAX_HOST)
        );
        assert_eq!(host(&format!("Host: {}", "a".repeat(MAX_HOST + 1))), None);
        // Only the head counts, not a body after it.
        assert_eq!(
            host_header(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nHost: x.y"),
            None
        );
    }

    #[test]
    fn the_hint_names_an_https_address() {
        assert_eq!(
            hint(Some("pi.local:8443"), 8443),
            "This port speaks HTTPS, not plain HTTP. Use https://pi.local:8443/ instead.\n"
        );
        assert!(hint(Some("pi.local"), 8443).contains("https://pi.local:8443/"));
        assert!(hint(Some("pi.local"), 443).contains("https://pi.local/"));
        assert!(hint(Some("[fe80::1]"), 8443).contains("https://[fe80::1]:8443/"));
        assert!(hint(None, 8443).contains("https:// with port 8443"));
    }

    #[test]
    fn only_a_plausible_request_line_is_waited_for() {
        assert!(looks_like_http(b""));
        assert!(looks_like_http(b"GE"));
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_http(b"\x00\x01GARBAGE"));
        assert!(!looks_like_http(b"get / HTTP/1.1"));
        assert!(!looks_like_http(b" / HTTP/1.1"));
        assert!(!looks_like_http(b"AAAAAAAAAAAAAAAAAAAAAAAA"));
    }

    #[test]
    fn the_answer_is_a_closing_plain_text_400() {
        let r = String::from_utf8(response(Some("pi.local:8443"), 8443)).unwrap();
        let (headers, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(headers.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(headers.contains("\r\nConnection: close"));
        assert!(headers.contains("\r\nContent-Type: text/plain; charset=utf-8"));
        assert!(headers.contains(&format!("\r\nContent-Length: {}", body.len())));
    }
}

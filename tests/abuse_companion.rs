//! The companion attacked from outside, as the real `avs-companion` process
//! (loopback only, bounded in count and time): a flood of idle TLS+HTTP/2
//! connections that only PING, plus plain idle TCP, must not keep a real
//! device from its answer nor take the process past its connection cap; a
//! connection that PINGs but asks nothing is closed after the idle timeout;
//! request data with forged log lines or terminal escapes never reaches the
//! log raw; and systemd hears READY, WATCHDOG and STOPPING.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use support::companion::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The client preface and an empty SETTINGS frame (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// A PING frame with 8 bytes of opaque data.
const H2_PING: &[u8] = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingpong";

/// Raise this process's descriptor limit to its hard limit (children, the
/// companion among them, inherit it): the flood needs a few thousand.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max.min(65_536);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The companion as a process with `server_extra` in `[server]`; LWA is
/// never called in these tests, so it points where nothing listens.
async fn start(
    env: &Env,
    server_extra: &str,
    envs: &[(&str, &str)],
) -> (Child, String, Arc<std::sync::Mutex<String>>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("https://127.0.0.1:{port}");
    let toml = env.companion_toml(
        &format!("127.0.0.1:{port}"),
        &format!("{base}/authresponse"),
        "https://127.0.0.1:9",
        server_extra,
    );
    let config = env.dir.path().join("companion.toml");
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(support::bin("avs-companion"));
    cmd.arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    spawn_listening(cmd).await
}

fn tls_connector(env: &Env) -> tokio_rustls::TlsConnector {
    let roots = https::load_roots(&env.ca_file).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(https::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// One hostile HTTP/2 client: TLS, the preface, then a PING every
/// `every` and never a request. Returns once the server closes it (with
/// how long that took after the handshake), or `None` if the server
/// refused it before the handshake finished.
async fn pinger(
    connector: tokio_rustls::TlsConnector,
    from: IpAddr,
    to: SocketAddr,
    every: Duration,
    held: Arc<AtomicUsize>,
    handshaking: Option<OwnedSemaphorePermit>,
) -> Option<Duration> {
    let tcp = connect_from(from, to).await.ok()?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .ok()?
        .ok()?;
    tls.write_all(H2_PREFACE).await.ok()?;
    drop(handshaking);
    let since = Instant::now();
    held.fetch_add(1, Ordering::SeqCst);
    let mut buf = vec![0u8; 4096];
    let mut tick = tokio::time::interval(every);
    let end = loop {
        tokio::select! {
            r = tls.read(&mut buf) => match r {
                Ok(0) | Err(_) => break since.elapsed(),
                Ok(_) => {}
            },
            _ = tick.tick() => {
                if tls.write_all(H2_PING).await.is_err() {
                    break since.elapsed();
                }
            }
        }
    };
    held.fetch_sub(1, Ordering::SeqCst);
    Some(end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_leave_room_for_a_real_device() {
    let limit = raise_nofile();
    assert!(limit >= 4096, "RLIMIT_NOFILE hard limit {limit} is too low");
    let env = Env::new();
    // The defaults: 512 in total, 32 per address, 30 s without a request.
    let (companion, base, log) = start(&env, "", &[]).await;
    let pid = companion.id().unwrap();
    let server: SocketAddr = base.trim_start_matches("https://").parse().unwrap();
    let device = Device {
        client: env.client(),
        base: base.clone(),
    };
    let (_, session, _) = device.register_ok("0001").await;
    let fds_before = open_fds(pid);

    // 2,000 hostile connections from ten addresses: 1,500 TLS + HTTP/2
    // PINGing every 2 s, and 500 plain TCP that say nothing.
    let connector = tls_connector(&env);
    let held = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    let mut plain = Vec::new();
    let flood_start = Instant::now();
    for n in 0..2000u32 {
        let from: IpAddr = format!("127.0.1.{}", 1 + n % 10).parse().unwrap();
        if n % 4 == 3 {
            if let Ok(s) = connect_from(from, server).await {
                plain.push(s);
            }
            continue;
        }
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (connector, held) = (connector.clone(), held.clone());
        // The permit bounds handshakes in flight, not connections held.
        tasks.push(tokio::spawn(pinger(
            connector,
            from,
            server,
            Duration::from_secs(2),
            held,
            Some(permit),
        )));
    }
    println!(
        "flood of 2000 connections opened in {:?}; {} hostile HTTP/2 connections held",
        flood_start.elapsed(),
        held.load(Ordering::SeqCst)
    );
    let peak = open_fds(pid);

    // The real device, from its own address, while the flood is open.
    let asked = Instant::now();
    let (status, v) = tokio::time::timeout(WAIT, device.poll(&session))
        .await
        .expect("the device got no answer during the flood");
    let took = asked.elapsed();
    println!("device token request answered in {took:?} during the flood");
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("authorization_pending")),
        "{v}"
    );
    assert!(
        took < Duration::from_secs(10),
        "answered only after {took:?}"
    );

    let held_now = held.load(Ordering::SeqCst);
    assert!(
        held_now <= 10 * 32,
        "{held_now} hostile connections held: more than 32 per address"
    );
    let fds = open_fds(pid).max(peak);
    println!("companion descriptors: {fds_before} before, {fds} during the flood");
    assert!(
        fds < fds_before + 512,
        "the companion holds {fds} descriptors: past its connection cap"
    );
    assert!(
        log.lock().unwrap().contains("connection limit reached"),
        "the refusals are logged"
    );
    for t in &tasks {
        t.abort();
    }
    drop(plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_only_ping_are_closed_after_the_idle_timeout() {
    let env = Env::new();
    let (_companion, base, _log) = start(&env, "idle_timeout_secs = 3", &[]).await;
    let server: SocketAddr = base.trim_start_matches("https://").parse().unwrap();
    let connector = tls_connector(&env);
    let held = Arc::new(AtomicUsize::new(0));
    let from: IpAddr = "127.0.0.1".parse().unwrap();
    let pingers: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(pinger(
                connector.clone(),
                from,
                server,
                Duration::from_millis(500),
                held.clone(),
                None,
            ))
        })
        .collect();
    for p in pingers {
        let lived = tokio::time::timeout(WAIT, p)
            .await
            .expect("a connection that only PINGs was never closed")
            .unwrap()
            .expect("the handshake failed");
        assert!(
            lived >= Duration::from_millis(2500),
            "closed after {lived:?}, before the idle timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_log_lines_and_terminal_escapes_never_reach_the_log_raw() {
    let env = Env::new();
    let (_companion, base, log) = start(&env, "", &[]).await;
    let device = Device {
        client: env.client(),
        base,
    };
    let forged = "not_allowed\n2026-12-05T01:00:00Z  INFO device linked product=forged\u{1b}[2J";
    for (product, dsn) in [(forged, "0001"), (PRODUCT, "00\u{1b}[31m01\r\nforged")] {
        let (status, v) = device.register(product, dsn).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"], "invalid_request");
    }
    // Allowed characters, refused product: logged, escaped or not needed.
    let (status, _) = device.register("not_allowed\u{7f}", "0001").await;
    assert_eq!(status, 400);
    let (status, _) = device.register("plainly_unknown", "0001").await;
    assert_eq!(status, 403);
    wait_for_log(&log, "plainly_unknown").await;
    let text = log.lock().unwrap().clone();
    assert!(
        !text.contains('\u{1b}'),
        "a raw ESC reached the log:\n{text}"
    );
    assert!(!text.contains('\r'), "a raw CR reached the log:\n{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("2026-12-05T01:00:00Z")),
        "a forged line reached the log:\n{text}"
    );
}

async fn wait_for_log(log: &Arc<std::sync::Mutex<String>>, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !log.lock().unwrap().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_and_stopping() {
    let env = Env::new();
    let notify = support::Notify::bind();
    let path = notify.path.display().to_string();
    let (mut companion, _base, _log) = start(
        &env,
        "",
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "1000000")],
    )
    .await;
    let seen = tokio::task::block_in_place(|| notify.wait_for("READY=1", WAIT));
    assert!(
        seen.iter().any(|m| m.contains("STATUS=serving HTTPS")),
        "{seen:?}"
    );
    tokio::task::block_in_place(|| notify.wait_for("WATCHDOG=1", WAIT));
    tokio::task::block_in_place(|| notify.wait_for("WATCHDOG=1", WAIT));
    let pid = i32::try_from(companion.id().unwrap()).unwrap();
    // SAFETY: a plain signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    tokio::task::block_in_place(|| notify.wait_for("STOPPING=1", WAIT));
    let status = tokio::time::timeout(WAIT, companion.wait())
        .await
        .expect("the companion did not stop")
        .unwrap();
    assert!(status.success(), "{status}");
}

//! What D-Bus says is what is true (issue 14): every state transition is
//! announced, in order, even one that lasts milliseconds; a Tap while not
//! connected fails at once with `NotConnected`; an empty 200 to
//! SynchronizeState is success; a debug log is avsd's own, not its
//! libraries' frame noise; and every server socket of the project sends
//! without Nagle's delay.

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use support::companion::{Env, WAIT};
use support::dialog::{Mic, Rig};
use support::faults::Recorder;
use support::system::{AvsSim, World, wait_connection};
use tokio_util::sync::CancellationToken;

const MIC16: &str = "capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n\
                     playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";

fn error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            format!("{name}: {}", msg.as_deref().unwrap_or(""))
        }
        other => other.to_string(),
    }
}

/// No value follows itself: each announcement is a transition.
fn assert_each_a_transition(property: &str, seq: &[String]) {
    for pair in seq.windows(2) {
        assert_ne!(pair[0], pair[1], "{property} announced twice: {seq:?}");
    }
}

#[tokio::test]
async fn every_transition_is_announced_and_talk_needs_a_connection() {
    let rig = Rig::start(MIC16).await;
    let _mic = Mic::new(&rig.path("mic.fifo"), 320);
    let rec = Recorder::start(&rig.world.bus.connect().await).await;

    // A Recognize refused at once: listening lasts milliseconds, and must
    // still be announced before idle, every time.
    for round in 0..3 {
        rig.avs.post("/status?code=503&count=1").await;
        let mark = rec.len();
        rig.dialog
            .tap()
            .await
            .expect("Tap on an idle, connected avsd");
        rec.wait_after(mark, "Dialog.State", |v| v == "idle", WAIT)
            .await
            .unwrap_or_else(|| panic!("never idle again; log:\n{}", rig.avsd.log_text()));
        if round == 0 {
            rec.wait_after(mark, "Dialog.LastError", |v| v.contains("503"), WAIT)
                .await
                .unwrap_or_else(|| panic!("LastError never named the 503"));
        }
        let states = rec.values("Dialog.State", mark);
        assert_eq!(states, ["listening", "idle"], "Dialog.State, round {round}");
        let seen = rec.seen.lock().unwrap();
        let at = |want: &str| {
            seen[mark..]
                .iter()
                .find(|(_, p, v)| p == "Dialog.State" && v == want)
                .map(|(t, _, _)| *t)
                .unwrap()
        };
        eprintln!(
            "round {round}: listening was announced {:?} before idle",
            at("idle") - at("listening")
        );
    }

    // The connection drops and comes back: each step announced in order.
    let mark = rec.len();
    rig.avs.post("/cut").await;
    rec.wait_after(mark, "Dialog.Connection", |v| v == "connected", WAIT)
        .await
        .unwrap_or_else(|| panic!("never connected again; log:\n{}", rig.avsd.log_text()));
    let seq = rec.values("Dialog.Connection", mark);
    assert_ne!(seq[0], "connected", "the drop was not announced: {seq:?}");
    assert!(
        seq.len() >= 2 && seq[seq.len() - 2] == "connecting",
        "connected without connecting first: {seq:?}"
    );
    assert_each_a_transition("Dialog.Connection", &seq);

    // Not connected (every new connection refused): Tap fails at once,
    // by name, instead of listening until the 15 s queue timeout.
    rig.avs.post("/refuse?secs=120").await;
    let mark = rec.len();
    rig.avs.post("/cut").await;
    rec.wait_after(mark, "Dialog.Connection", |v| v != "connected", WAIT)
        .await
        .expect("the cut was never announced");
    for talk in ["Tap", "Hold"] {
        let started = Instant::now();
        let result = match talk {
            "Tap" => rig.dialog.tap().await,
            _ => rig.dialog.hold().await,
        };
        let took = started.elapsed();
        let err = result.expect_err("talk without a connection");
        let name = error_name(&err);
        assert!(
            name.starts_with("org.avsd.Avs1.Error.NotConnected"),
            "{talk}: {name}"
        );
        assert!(took < Duration::from_secs(5), "{talk} took {took:?}");
    }
    // Meanwhile the reconnect back-off is on D-Bus and in `avsctl status`.
    rec.wait_after(mark, "Dialog.NextReconnectAt", |v| v != "0", WAIT)
        .await
        .unwrap_or_else(|| panic!("no back-off announced; log:\n{}", rig.avsd.log_text()));
    let attempts = rec.values("Dialog.ReconnectAttempt", mark);
    assert!(
        attempts
            .iter()
            .any(|a| a.parse::<u32>().is_ok_and(|n| n >= 1)),
        "ReconnectAttempt: {attempts:?}"
    );
    let out = std::process::Command::new(support::bin("avsctl"))
        .arg("status")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &rig.world.bus.address)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("Reconnecting:  attempt ") || status.contains("reconnects since"),
        "avsctl status shows no back-off:\n{status}"
    );
    assert_eq!(rig.dialog.state().await.unwrap(), "idle");
    let mark_states = rec.values("Dialog.State", mark);
    assert!(
        mark_states.is_empty(),
        "a refused Tap changed the state: {mark_states:?}"
    );

    // Every announcement so far, of every property, was a transition.
    for property in ["Dialog.State", "Dialog.Connection", "Dialog.LastError"] {
        assert_each_a_transition(property, &rec.values(property, 0));
    }

    // A debug log through a connect and a dialog is avsd's own: the HTTP/2,
    // TLS and D-Bus libraries stay at info unless RUST_LOG names them.
    let log = rig.avsd.log_text();
    let lines: Vec<&str> = log.lines().collect();
    let frames = lines.iter().filter(|l| l.contains("frame=")).count();
    assert_eq!(frames, 0, "HTTP/2 frame lines in the debug log:\n{log}");
    let debug = lines.iter().filter(|l| l.contains("DEBUG")).count();
    assert!(debug > 0, "RUST_LOG=debug gave no debug lines:\n{log}");
    eprintln!("debug log: {} lines, {debug} at debug", lines.len());
}

#[tokio::test]
async fn an_empty_200_to_synchronize_state_is_success() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    avs.post("/sync?empty_200=true").await;
    let (avsd, _auth) = world
        .logged_in(&world.avsd_config_with_avs(&avs, 600))
        .await;
    let dialog = avsctl::proxy::DialogProxy::new(&world.bus.connect().await)
        .await
        .unwrap();
    wait_connection(&dialog, "connected", &avsd).await;
    let stats = avs.stats().await;
    let syncs: Vec<u64> = stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "System.SynchronizeState")
        .map(|e| e["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(syncs, [200], "SynchronizeState answers: {stats}");
    assert_eq!(
        stats["connections"]["total"],
        1,
        "avsd connected more than once: {stats}\n{}",
        avsd.log_text()
    );
    assert!(
        !avsd.log_text().contains("malformed"),
        "{}",
        avsd.log_text()
    );
}

/// TCP_NODELAY on the accepted socket for `server` whose peer is
/// `client`, read from this process's own descriptors.
fn nodelay_of_accepted(server: SocketAddr, client: SocketAddr) -> Option<bool> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: only borrowed for the calls below; a descriptor closed
        // meanwhile makes them fail with EBADF, which is skipped.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        if local == Some(server) && peer == Some(client) {
            return sock.tcp_nodelay().ok();
        }
    }
    None
}

/// Connect to `server`; whether the socket it accepts gets TCP_NODELAY.
async fn accepted_nodelay(server: SocketAddr) -> bool {
    let tcp = tokio::net::TcpStream::connect(server).await.unwrap();
    let client = tcp.local_addr().unwrap();
    // The server sets the option just after accept(): wait for it to be
    // on (a server that never sets it keeps it off until the timeout).
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(true) = nodelay_of_accepted(server, client) {
                return true;
            }
            // The accept happens on another task: give it the thread.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    drop(tcp);
    found.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_socket_sends_without_delay() {
    // The shared HTTPS server (the companion's and the LWA stand-in's).
    let env = Env::new();
    let tls = https::server_config(&env.cert_file, &env.key_file, None).unwrap();
    let shutdown = CancellationToken::new();
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https_addr = https.local_addr().unwrap();
    tokio::spawn(https::serve::serve(
        https,
        tls.clone(),
        shutdown.clone(),
        |_req, _peer| async { hyper::Response::new(http_body_util::Full::default()) },
    ));
    // The AVS stand-in and its control API.
    let avs = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let avs_addr = avs.local_addr().unwrap();
    let control = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_addr = control.local_addr().unwrap();
    let config = avs_sim::avs::AvsConfig {
        tls,
        token_key: env.token_key.clone(),
        answer_mp3: bytes::Bytes::from_static(b"not played"),
        dialog: avs_sim::avs::state::DialogSettings::default(),
        idle_timeout: None,
        connection_lifetime: None,
        control: Some(control),
        revocations: None,
    };
    tokio::spawn(avs_sim::avs::run(avs, config, shutdown.clone()));

    for (what, addr) in [
        ("the HTTPS server", https_addr),
        ("the AVS stand-in", avs_addr),
        ("the AVS stand-in's control API", control_addr),
    ] {
        assert!(
            accepted_nodelay(addr).await,
            "{what} accepted a socket without TCP_NODELAY"
        );
    }
    shutdown.cancel();
}

//! `avs-sim avs` enforces what AVS enforces and its control API's knobs
//! are seen by the daemon's own HTTP/2 client. Black-box over HTTPS.

use std::sync::Arc;
use std::time::Duration;

use avs_proto::encode::FormData;
use avsd::avs::link::{self, Closed};
use bytes::Bytes;
use http::Method;
use kit::secret::Secret;
use serde_json::{Value, json};
use support::sim::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn names(stats: &Value) -> Vec<(String, u64)> {
    stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downchannel_then_synchronize_state_then_anything() {
    let sim = Sim::start().await;
    let link = sim.link().await;
    let token = sim.token();
    let started = metadata("SpeechSynthesizer", "SpeechStarted", json!({"token": "t"}));

    let (status, body) = event(&link, &token, &started).await;
    assert_eq!(status, 400);
    let (code, why) = exception(&body);
    assert_eq!(code, "INVALID_REQUEST_EXCEPTION");
    assert!(why.contains("downchannel"), "{why}");

    let _down = downchannel(&link, &token).await;
    let (status, body) = event(&link, &token, &started).await;
    assert_eq!(status, 400);
    assert!(
        exception(&body)
            .1
            .contains("before System.SynchronizeState")
    );

    let report = avsd::avs::discovery::add_or_update_report(
        &avsd::avs::connection::Identity {
            product_id: "p".into(),
            dsn: "1".into(),
            capabilities: vec![avsd::avs::discovery::Capability::new(
                "SpeechRecognizer",
                "2.3",
            )],
        },
        &token,
    );
    assert_eq!(event(&link, &token, &report).await.0, 202);
    let sync = metadata("System", "SynchronizeState", json!({}));
    assert_eq!(event(&link, &token, &sync).await.0, 204);
    assert_eq!(event(&link, &token, &started).await.0, 204);

    let ping = within("ping", link.get("/ping", &token)).await.unwrap();
    assert_eq!(ping.status(), 204);

    let stats = sim
        .wait("pings=1&event=SpeechSynthesizer.SpeechStarted")
        .await;
    assert_eq!(
        names(&stats),
        [
            ("SpeechSynthesizer.SpeechStarted".to_string(), 400),
            ("Alexa.Discovery.AddOrUpdateReport".to_string(), 202),
            ("System.SynchronizeState".to_string(), 204),
            ("SpeechSynthesizer.SpeechStarted".to_string(), 204),
        ]
    );
    assert_eq!(stats["downchannels"], 1);
    assert_eq!(stats["connections"]["current"], 1);
    // The downchannel and one event or ping at a time (a request's
    // handler may still be finishing as the next one comes in).
    let peak = stats["peak_requests"].as_u64().unwrap();
    assert!((2..=3).contains(&peak), "{peak}");
    assert_eq!(stats["open"][0]["synced"], true);
    // The event before the downchannel never got as far as its name.
    assert_eq!(stats["rejections"].as_array().unwrap().len(), 2);

    // A second downchannel on the same connection is refused.
    let resp = link.get("/v20160207/directives", &token).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(exception(&body_of(resp).await).1.contains("already open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_expired_tokens_get_403_and_the_connection_closes() {
    let sim = Sim::start().await;
    let expired = avs_sim::token::issue_access_token_at(
        &sim.key,
        "c",
        avs_sim::token::unix_now() - 7200,
        Duration::from_secs(3600),
    );
    let foreign = avs_sim::token::issue_access_token(
        b"another key, another key, another",
        "c",
        Duration::from_secs(3600),
    );
    for (token, path, expect) in [
        (expired.as_str(), "/v20160207/directives", "expired"),
        (foreign.as_str(), "/ping", "signature"),
        ("Atza|nonsense", "/v20160207/directives", "malformed"),
    ] {
        let link = sim.link().await;
        let resp = link.get(path, &Secret::new(token)).await.unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        let (code, why) = exception(&body_of(resp).await);
        assert_eq!(code, "UNAUTHORIZED_REQUEST_EXCEPTION");
        assert!(why.contains(expect), "{why}");
        assert!(!why.contains(token), "the token leaked into the answer");
        // AVS closes the connection after an authorization failure.
        assert_eq!(
            within("GOAWAY after 403", link.closed()).await,
            Closed::Graceful
        );
    }
    // An event without any authorization header.
    let link = sim.link().await;
    let form = FormData::new();
    let (resp, body) = link
        .open(
            Method::POST,
            "/v20160207/events",
            &Secret::new(""),
            Some(&form.content_type()),
            true,
        )
        .await
        .unwrap();
    body.unwrap()
        .send_data(
            form.whole(&metadata("System", "SynchronizeState", json!({})))
                .unwrap(),
            true,
        )
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_get_400_or_415_with_a_description() {
    let sim = Sim::start().await;
    let (link, _down) = synced(&sim).await;
    let token = sim.token();
    let ok_meta = metadata(
        "System",
        "UserInactivityReport",
        json!({"inactiveTimeInSeconds": 1}),
    );
    let form = FormData::with_boundary("b0undary").unwrap();
    let ct = form.content_type();

    let check = |status: u16, body: &Bytes, want_status: u16, want_code: &str, want: &str| {
        assert_eq!(status, want_status, "{}", String::from_utf8_lossy(body));
        let (code, why) = exception(body);
        assert_eq!(code, want_code);
        assert!(why.contains(want), "{why:?} lacks {want:?}");
    };

    let (s, b) = raw_event(
        &link,
        &token,
        "application/json",
        Bytes::from(ok_meta.clone()),
    )
    .await;
    check(s, &b, 415, "UNSUPPORTED_MEDIA_TYPE", "multipart/form-data");
    let (s, b) = raw_event(
        &link,
        &token,
        "multipart/form-data",
        form.whole(&ok_meta).unwrap(),
    )
    .await;
    check(s, &b, 400, "INVALID_REQUEST_EXCEPTION", "boundary");
    let (s, b) = raw_event(
        &link,
        &token,
        &ct,
        Bytes::from_static(b"--b0undary\r\nno colon here\r\n\r\n{}"),
    )
    .await;
    check(
        s,
        &b,
        400,
        "INVALID_REQUEST_EXCEPTION",
        "malformed multipart",
    );
    let (s, b) = raw_event(&link, &token, &ct, form.whole("{\"event\": ").unwrap()).await;
    check(s, &b, 400, "INVALID_REQUEST_EXCEPTION", "not valid JSON");
    let no_id = json!({"event": {"header": {"namespace": "System", "name": "UserInactivityReport"}, "payload": {}}});
    let (s, b) = raw_event(&link, &token, &ct, form.whole(&no_id.to_string()).unwrap()).await;
    check(
        s,
        &b,
        400,
        "INVALID_REQUEST_EXCEPTION",
        "event.header.messageId",
    );
    let renamed = Bytes::from(
        String::from_utf8(form.whole(&ok_meta).unwrap().to_vec())
            .unwrap()
            .replace("name=\"metadata\"", "name=\"meta\""),
    );
    let (s, b) = raw_event(&link, &token, &ct, renamed).await;
    check(s, &b, 400, "INVALID_REQUEST_EXCEPTION", "`meta`");
    // Two audio parts.
    let mut two = form.head(&ok_meta).unwrap().to_vec();
    for _ in 0..2 {
        two.extend_from_slice(&form.audio_part_header());
        two.extend_from_slice(&[0, 0, 0, 0]);
        two.extend_from_slice(b"\r\n");
    }
    two.extend_from_slice(b"--b0undary--\r\n");
    let (s, b) = raw_event(&link, &token, &ct, Bytes::from(two)).await;
    check(
        s,
        &b,
        400,
        "INVALID_REQUEST_EXCEPTION",
        "more than one `audio` part",
    );
    // The body ends before its closing delimiter.
    let (s, b) = raw_event(&link, &token, &ct, form.head(&ok_meta).unwrap()).await;
    check(s, &b, 400, "INVALID_REQUEST_EXCEPTION", "body ended");

    // Wrong method, unknown path.
    let (resp, _) = link
        .open(Method::GET, "/v20160207/events", &token, None, false)
        .await
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 405);
    assert!(exception(&body_of(resp).await).1.contains("only POST"));
    let resp = link
        .get("/v1/avs/speechrecognizer/recognize", &token)
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // The connection survived all that.
    assert_eq!(event(&link, &token, &ok_meta).await.0, 204);
}

/// A raw TLS client offering `alpn` (nothing when empty).
async fn tls_client(
    sim: &Sim,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in https::load_certs(&sim.ca_file).unwrap() {
        roots.add(c).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(https::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let addr = sim.base.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_is_refused_and_ten_streams_are_advertised() {
    let sim = Sim::start().await;
    // Offering only HTTP/1.1: the handshake fails (no_application_protocol).
    let err = within("TLS refusal", tls_client(&sim, &[b"http/1.1"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    // No ALPN at all: an HTTP/1.1 request is answered 505 and closed.
    let mut tls = within("TLS", tls_client(&sim, &[])).await.unwrap();
    tls.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    within("the 505", tls.read_to_string(&mut answer))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 505"), "{answer}");
    assert!(answer.contains("HTTP/2 only"), "{answer}");

    // SETTINGS_MAX_CONCURRENT_STREAMS, as seen by a plain h2 client.
    let tls = within("TLS", tls_client(&sim, &[b"h2"])).await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = http::Request::get(format!("{}/ping", sim.base))
        .header("authorization", format!("Bearer {}", sim.token().expose()))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 204);
    assert_eq!(send.current_max_send_streams(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_directives_arrive_whole_and_split_into_tiny_frames() {
    let sim = Sim::start().await;
    let (status, v) = sim.call(Method::POST, "/push", Some("{}".into())).await;
    assert_eq!(status, 409, "{v}");

    let (_link, mut down) = synced(&sim).await;
    let directive = json!({"directive": {
        "header": {"namespace": "System", "name": "ResetUserInactivity", "messageId": "m-1"},
        "payload": {}
    }});
    let (status, v) = sim
        .call(Method::POST, "/push", Some(directive.to_string()))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(down.directive().await, directive["directive"]);

    let big = json!({"directive": {
        "header": {"namespace": "Speaker", "name": "SetVolume", "messageId": "m-2"},
        "payload": {"volume": 42, "padding": "x".repeat(300)}
    }});
    let before = down.frames;
    let (status, _) = sim
        .call(Method::POST, "/push?split=tiny", Some(big.to_string()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(down.directive().await, big["directive"]);
    let frames = down.frames - before;
    assert!(
        frames >= big.to_string().len() / 7,
        "only {frames} DATA frames"
    );
    assert!(
        down.largest_frame <= 400,
        "a frame of {} bytes",
        down.largest_frame
    );

    // A Speak pushed with its MP3 attachment.
    let speak = json!({"directive": {
        "header": {"namespace": "SpeechSynthesizer", "name": "Speak", "messageId": "m-3"},
        "payload": {"url": "cid:push-1", "format": "AUDIO_MPEG", "token": "t"}
    }});
    let (status, _) = sim
        .call(
            Method::POST,
            "/push?split=tiny&attach=push-1",
            Some(speak.to_string()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(down.directive().await["header"]["name"], "Speak");
    let mp3 = down.next().await.unwrap();
    assert_eq!(mp3.headers.content_id.as_deref(), Some("push-1"));
    assert_eq!(&mp3.body[..], avs_sim::avs::BUILTIN_ANSWER_MP3);

    // Malformed JSON is pushed as given.
    let (status, _) = sim
        .call(Method::POST, "/push", Some("{not json".into()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(&down.next().await.unwrap().body[..], b"{not json");
    assert_eq!(sim.stats().await["pushes"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_and_cut_are_seen_by_the_client() {
    let sim = Sim::start().await;
    let (first, down) = synced(&sim).await;
    // A GOAWAY that leaves the downchannel open: the old connection lives
    // on while the client makes its next one (make before break).
    sim.post("/goaway?end_downchannel=false").await;
    let (second, mut down2) = synced(&sim).await;
    let c = sim.stats().await["connections"].clone();
    assert_eq!(
        (c["current"].as_u64(), c["peak"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (c["active"].as_u64(), c["peak_active"].as_u64()),
        (Some(1), Some(1))
    );
    drop(down);
    assert_eq!(
        within("the old connection's end", first.closed()).await,
        Closed::Graceful
    );
    sim.wait("current=1").await;

    // By default AVS ends the downchannel with the GOAWAY. An event whose
    // stream opened before it is still answered: h2 finishes the streams
    // the GOAWAY's last stream id covers, downchannel or not.
    let form = FormData::new();
    let (resp, body) = second
        .open(
            Method::POST,
            "/v20160207/events",
            &sim.token(),
            Some(&form.content_type()),
            true,
        )
        .await
        .unwrap();
    sim.post("/goaway").await;
    assert!(down2.next().await.is_none());
    assert!(down2.stream_ends().await);
    let unknown = metadata("Bogus", "Report", json!({}));
    body.unwrap()
        .send_data(form.whole(&unknown).unwrap(), true)
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), 204);
    assert_eq!(within("GOAWAY", second.closed()).await, Closed::Graceful);

    let (third, _down3) = synced(&sim).await;
    assert_eq!(sim.post("/cut").await["connections"], 1);
    match within("the cut", third.closed()).await {
        Closed::Broken(_) => {}
        other => panic!("a cut connection closed as {other:?}"),
    }
    let stats = sim.wait("current=0").await;
    let c = &stats["connections"];
    assert_eq!(c["total"], 3);
    assert_eq!(c["goaways"], 2);
    assert_eq!(c["cuts"], 1);
    assert_eq!(c["peak_active"], 1);
    assert_eq!(stats["downchannels"], 3);
}

/// The daemon's own reader (`avsd::avs::inbound::pump`) on the downchannel:
/// a Speak and its MP3 pushed in tiny DATA frames arrive intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_pump_reads_a_tiny_framed_speak_and_its_mp3() {
    use avsd::avs::inbound::{Inbound, pump};
    let sim = Sim::start().await;
    let link = sim.link().await;
    let token = sim.token();
    let resp = link.get("/v20160207/directives", &token).await.unwrap();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move { pump(resp.into_body(), &ct, &tx, None).await });
    let speak = json!({"directive": {
        "header": {"namespace": "SpeechSynthesizer", "name": "Speak", "messageId": "m"},
        "payload": {"url": "cid:tts-9", "format": "AUDIO_MPEG", "token": "t9"}
    }});
    let (status, _) = sim
        .call(
            Method::POST,
            "/push?split=tiny&attach=tts-9",
            Some(speak.to_string()),
        )
        .await;
    assert_eq!(status, 200);
    match within("the directive", rx.recv()).await {
        Some(Inbound::Directive { directive, .. }) => {
            assert_eq!(directive.header.name, "Speak");
            assert_eq!(directive.payload["token"], "t9");
        }
        other => panic!("{other:?}"),
    }
    let Some(Inbound::Attachment {
        content_id,
        mut data,
    }) = within("the MP3", rx.recv()).await
    else {
        panic!("no attachment");
    };
    assert_eq!(content_id, "tts-9");
    let mut mp3 = Vec::new();
    while let Some(chunk) = within("MP3 bytes", data.recv()).await {
        mp3.extend_from_slice(&chunk);
    }
    assert_eq!(mp3, avs_sim::avs::BUILTIN_ANSWER_MP3);
    assert_eq!(
        link.closed_now(),
        None,
        "the connection survived the tiny frames"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_status_and_delay_knobs() {
    let sim = Sim::start().await;
    sim.post("/refuse?secs=60").await;
    let err = link::connect(&sim.endpoint()).await.unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert_eq!(sim.stats().await["connections"]["refused"], 1);
    sim.post("/refuse?secs=0").await;

    let (link, _down) = synced(&sim).await;
    let token = sim.token();
    let meta = metadata(
        "System",
        "UserInactivityReport",
        json!({"inactiveTimeInSeconds": 1}),
    );
    sim.post("/status?code=429&count=2").await;
    for _ in 0..2 {
        let (s, b) = event(&link, &token, &meta).await;
        assert_eq!(s, 429);
        assert_eq!(exception(&b).0, "THROTTLING_EXCEPTION");
    }
    assert_eq!(event(&link, &token, &meta).await.0, 204);
    sim.post("/status?code=500").await;
    let (s, b) = event(&link, &token, &meta).await;
    assert_eq!(
        (s, exception(&b).0.as_str()),
        (500, "INTERNAL_SERVICE_EXCEPTION")
    );

    // 503 on the downchannel of the next connection: no body (§C.7).
    sim.post("/status?code=503&on=downchannel").await;
    let other = sim.link().await;
    let resp = other.get("/v20160207/directives", &token).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(body_of(resp).await.is_empty());

    sim.post("/delay?ms=300&on=ping").await;
    let t = tokio::time::Instant::now();
    assert_eq!(link.get("/ping", &token).await.unwrap().status(), 204);
    assert!(t.elapsed() >= Duration::from_millis(300));
    sim.post("/delay?ms=0").await;

    let (status, v) = sim.call(Method::POST, "/status?code=418", None).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("418"));
    let (status, v) = sim.call(Method::GET, "/wait", None).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = sim
        .call(Method::GET, "/wait?pings=99&timeout_ms=50", None)
        .await;
    assert_eq!(status, 408, "{v}");

    // A 403 from the knob behaves like a refused token: GOAWAY follows.
    sim.post("/status?code=403").await;
    let (s, b) = event(&link, &token, &meta).await;
    assert_eq!(
        (s, exception(&b).0.as_str()),
        (403, "UNAUTHORIZED_REQUEST_EXCEPTION")
    );
    assert_eq!(
        within("GOAWAY after 403", link.closed()).await,
        Closed::Graceful
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_or_old_connections_get_a_goaway() {
    let sim = Sim::start_with(|c| c.idle_timeout = Some(Duration::from_millis(500))).await;
    let (link, _down) = synced(&sim).await;
    assert_eq!(within("idle close", link.closed()).await, Closed::Graceful);
    assert_eq!(sim.stats().await["connections"]["goaways"], 1);

    let sim = Sim::start_with(|c| c.connection_lifetime = Some(Duration::from_millis(500))).await;
    let (link, mut down) = synced(&sim).await;
    assert!(
        down.next().await.is_none(),
        "the downchannel ends with the GOAWAY"
    );
    assert_eq!(
        within("the hourly GOAWAY", link.closed()).await,
        Closed::Graceful
    );
    assert_eq!(sim.stats().await["connections"]["goaways"], 1);
}

/// The real binary: flags, the two address lines, and a refused
/// non-loopback control address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_its_addresses_and_serves() {
    use tokio::io::AsyncBufReadExt;
    let f = files();
    let mut cmd = tokio::process::Command::new(support::bin("avs-sim"));
    cmd.arg("avs")
        .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&f.cert_file)
        .arg("--tls-key")
        .arg(&f.key_file)
        .arg("--token-key-file")
        .arg(&f.token_key_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = within("the listening line", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let second = within("the control line", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let base = first
        .strip_prefix("avs-sim avs listening on ")
        .unwrap()
        .to_string();
    let control = second
        .strip_prefix("avs-sim avs control on ")
        .unwrap()
        .to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{first}");
    assert!(control.starts_with("http://127.0.0.1:"), "{second}");

    let ep = link::Endpoint::new(&base, Some(&f.ca_file)).unwrap();
    let link = within("connect", link::connect(&ep)).await.unwrap();
    let token = Secret::new(avs_sim::token::issue_access_token(
        &f.key,
        "c",
        Duration::from_secs(60),
    ));
    assert_eq!(link.get("/ping", &token).await.unwrap().status(), 204);
    let stats: Value = reqwest::get(format!("{control}/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["pings"], 1);
    let _ = child.kill().await;

    let out = tokio::process::Command::new(support::bin("avs-sim"))
        .arg("avs")
        .args(["--control", "0.0.0.0:0"])
        .arg("--tls-cert")
        .arg(&f.cert_file)
        .arg("--tls-key")
        .arg(&f.key_file)
        .arg("--token-key-file")
        .arg(&f.token_key_file)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let out = tokio::process::Command::new(support::bin("avs-sim"))
        .arg("avs")
        .args(["--answer-mp3", "/nonexistent/answer.mp3"])
        .arg("--tls-cert")
        .arg(&f.cert_file)
        .arg("--tls-key")
        .arg(&f.key_file)
        .arg("--token-key-file")
        .arg(&f.token_key_file)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/answer.mp3"), "{err}");
}

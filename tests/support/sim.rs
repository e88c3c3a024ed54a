//! Harness for the `avs-sim avs` tests: the stand-in in this process on
//! port 0 with a throwaway CA, the daemon's own HTTP/2 client
//! (`avsd::avs::link`) and event writer (`avs_proto::encode`), and a reader
//! for `multipart/related` answers built on `avs_proto::multipart`.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use avs_proto::encode::FormData;
use avs_proto::multipart::{Limits, Parser, PartHeaders, Piece, boundary_from_content_type};
use avs_sim::avs::{AvsConfig, DialogSettings};
use avsd::avs::link::{self, Endpoint, Link};
use bytes::{Bytes, BytesMut};
use h2::client::ResponseFuture;
use h2::{RecvStream, SendStream};
use http::{Method, Response};
use kit::secret::Secret;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// No test waits longer than this for anything.
pub const WAIT: Duration = Duration::from_secs(15);

/// Fail with `what` rather than hang.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// The stand-in running in this process.
pub struct Sim {
    /// `https://127.0.0.1:PORT` of the AVS API.
    pub base: String,
    /// `http://127.0.0.1:PORT` of the control API.
    pub control: String,
    /// The key access tokens are signed with.
    pub key: Vec<u8>,
    /// `ca.crt`.
    pub ca_file: PathBuf,
    /// `server.crt`.
    pub cert_file: PathBuf,
    /// `server.key`.
    pub key_file: PathBuf,
    /// The file holding `key`.
    pub token_key_file: PathBuf,
    /// The folder of the files; removed on drop.
    pub dir: tempfile::TempDir,
    /// Stops the stand-in.
    pub shutdown: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a token key, on disk.
pub struct Files {
    /// The folder of the files; removed on drop.
    pub dir: tempfile::TempDir,
    /// `ca.crt`.
    pub ca_file: PathBuf,
    /// `server.crt`.
    pub cert_file: PathBuf,
    /// `server.key`.
    pub key_file: PathBuf,
    /// The file holding `key`.
    pub token_key_file: PathBuf,
    /// The key access tokens are signed with.
    pub key: Vec<u8>,
}

/// Make the PKI and the token key in a new folder.
pub fn files() -> Files {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = crate::tls::TestCa::write(dir.path(), "avs-sim test CA");
    let p = |n: &str| dir.path().join(n);
    let key = uuid::Uuid::new_v4().simple().to_string().into_bytes();
    std::fs::write(p("token.key"), &key).unwrap();
    Files {
        ca_file: tls.ca_file,
        cert_file: tls.cert_file,
        key_file: tls.key_file,
        token_key_file: p("token.key"),
        key,
        dir,
    }
}

impl Sim {
    /// Start with the test defaults.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Start with the test defaults (StopCapture after 300 ms, no idle
    /// close), changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut AvsConfig)) -> Self {
        let f = files();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let control_base = format!("http://{}", control.local_addr().unwrap());
        let mut config = AvsConfig {
            tls: https::server_config(&f.cert_file, &f.key_file, None).unwrap(),
            token_key: f.key.clone(),
            revocations: None,
            answer_mp3: Bytes::from_static(avs_sim::avs::BUILTIN_ANSWER_MP3),
            dialog: DialogSettings {
                stop_capture: Duration::from_millis(300),
                ..DialogSettings::default()
            },
            idle_timeout: None,
            connection_lifetime: None,
            control: Some(control),
        };
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        tokio::spawn(avs_sim::avs::run(listener, config, shutdown.clone()));
        Self {
            base,
            control: control_base,
            key: f.key,
            ca_file: f.ca_file,
            cert_file: f.cert_file,
            key_file: f.key_file,
            token_key_file: f.token_key_file,
            dir: f.dir,
            shutdown,
            http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        }
    }

    /// A token as `avs-sim lwa` would issue it, valid for an hour.
    pub fn token(&self) -> Secret {
        Secret::new(avs_sim::token::issue_access_token(
            &self.key,
            "amzn1.application-oa2-client.test",
            Duration::from_secs(3600),
        ))
    }

    /// The endpoint avsd's link connects to.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(&self.base, Some(&self.ca_file)).unwrap()
    }

    /// An HTTP/2 link to it with a valid token.
    pub async fn link(&self) -> Link {
        within("connect", link::connect(&self.endpoint()))
            .await
            .expect("connect to the stand-in")
    }

    /// A control call; its status and JSON answer.
    pub async fn call(&self, method: Method, path: &str, body: Option<String>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.control));
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.expect("control API");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A control POST that must succeed.
    pub async fn post(&self, path: &str) -> Value {
        let (status, v) = self.call(Method::POST, path, None).await;
        assert_eq!(status, 200, "POST {path}: {v}");
        v
    }

    /// Script the next Speak answer: `directives` (a JSON array of
    /// `{namespace, name, payload}`) follow its Speak.
    pub async fn answer(&self, directives: Value) {
        let body = serde_json::json!({ "directives": directives }).to_string();
        let (status, v) = self.call(Method::POST, "/answer", Some(body)).await;
        assert_eq!(status, 200, "POST /answer: {v}");
    }

    /// The stand-in's `/stats`.
    pub async fn stats(&self) -> Value {
        self.call(Method::GET, "/stats", None).await.1
    }

    /// Block until the stand-in's statistics meet `query` (e.g.
    /// `event=System.SynchronizeState`); the statistics then.
    pub async fn wait(&self, query: &str) -> Value {
        let (status, v) = self
            .call(
                Method::GET,
                &format!("/wait?timeout_ms=10000&{query}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "wait {query}: {v}");
        v
    }

    /// The raw bytes of a control GET.
    pub async fn get_bytes(&self, path: &str) -> (u16, Bytes) {
        let r = self
            .http
            .get(format!("{}{path}", self.control))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap())
    }
}

/// Piece metadata with an empty context.
pub fn metadata(namespace: &str, name: &str, payload: Value) -> String {
    json!({
        "context": [],
        "event": {
            "header": {"namespace": namespace, "name": name, "messageId": uuid::Uuid::new_v4().to_string()},
            "payload": payload,
        }
    })
    .to_string()
}

/// The metadata part of a Recognize event.
pub fn recognize_metadata(profile: &str, dialog: &str, initiator: Value) -> String {
    json!({
        "context": [],
        "event": {
            "header": {"namespace": "SpeechRecognizer", "name": "Recognize",
                       "messageId": uuid::Uuid::new_v4().to_string(), "dialogRequestId": dialog},
            "payload": {"profile": profile, "format": "AUDIO_L16_RATE_16000_CHANNELS_1", "initiator": initiator},
        }
    })
    .to_string()
}

/// Open a Recognize and write its metadata and the audio part's header.
pub async fn start_recognize(
    link: &Link,
    token: &Secret,
    metadata: &str,
) -> (ResponseFuture, SendStream<Bytes>, FormData) {
    let form = FormData::new();
    let (resp, body) = link
        .open(
            Method::POST,
            "/v20160207/events",
            token,
            Some(&form.content_type()),
            true,
        )
        .await
        .expect("open the Recognize stream");
    let mut body = body.unwrap();
    body.send_data(form.head(metadata).unwrap(), false).unwrap();
    body.send_data(form.audio_part_header(), false).unwrap();
    (resp, body, form)
}

/// A whole Recognize (all audio at once): its status and response.
pub async fn recognize_at_once(
    link: &Link,
    token: &Secret,
    metadata: &str,
    audio: Vec<u8>,
) -> http::Response<h2::RecvStream> {
    let (resp, mut body, form) = start_recognize(link, token, metadata).await;
    body.send_data(Bytes::from(audio), false).unwrap();
    body.send_data(form.tail(), true).unwrap();
    within("the Recognize answer", resp)
        .await
        .expect("response")
}

/// Read a whole response body.
pub async fn body_of(resp: Response<RecvStream>) -> Bytes {
    let mut body = resp.into_body();
    let mut out = BytesMut::new();
    while let Some(chunk) = within("a response body", body.data()).await {
        let chunk = chunk.expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    out.freeze()
}

/// POST raw `body` to the events path with `content_type`.
pub async fn raw_event(
    link: &Link,
    token: &Secret,
    content_type: &str,
    body: Bytes,
) -> (u16, Bytes) {
    let (resp, stream) = link
        .open(
            Method::POST,
            "/v20160207/events",
            token,
            Some(content_type),
            true,
        )
        .await
        .expect("open an event stream");
    stream.unwrap().send_data(body, true).unwrap();
    let resp = within("an event's response", resp).await.expect("response");
    let status = resp.status().as_u16();
    (status, body_of(resp).await)
}

/// Send one event without audio: its status and body.
pub async fn event(link: &Link, token: &Secret, metadata: &str) -> (u16, Bytes) {
    let form = FormData::new();
    raw_event(
        link,
        token,
        &form.content_type(),
        form.whole(metadata).unwrap(),
    )
    .await
}

/// The code and description of a System.Exception body.
pub fn exception(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(v["header"]["namespace"], "System", "{v}");
    assert_eq!(v["header"]["name"], "Exception", "{v}");
    (
        v["payload"]["code"].as_str().unwrap_or("").to_string(),
        v["payload"]["description"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// A `multipart/related` body read part by part as it streams.
pub struct Parts {
    body: RecvStream,
    parser: Parser,
    /// DATA frames received so far.
    pub frames: usize,
    /// The largest DATA frame received.
    pub largest_frame: usize,
}

/// One part: its headers and its whole body.
#[derive(Debug)]
pub struct Part {
    /// The part's headers.
    pub headers: PartHeaders,
    /// The part's body.
    pub body: Bytes,
}

impl Part {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON part")
    }
}

impl Parts {
    /// Read the multipart answer of `resp`.
    pub fn new(resp: Response<RecvStream>) -> Self {
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("multipart/related;"), "{ct}");
        assert!(ct.contains("type=application/json"), "{ct}");
        let boundary = boundary_from_content_type(&ct).unwrap();
        Self {
            body: resp.into_body(),
            parser: Parser::new(&boundary, Limits::default()).unwrap(),
            frames: 0,
            largest_frame: 0,
        }
    }

    async fn event(&mut self) -> Piece {
        loop {
            if let Some(e) = self.parser.next_piece().expect("well-formed multipart") {
                return e;
            }
            match within("multipart data", self.body.data()).await {
                Some(chunk) => {
                    let chunk = chunk.expect("stream data");
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.frames += 1;
                    self.largest_frame = self.largest_frame.max(chunk.len());
                    self.parser.push(&chunk);
                }
                None => self.parser.finish(),
            }
        }
    }

    /// The next complete part, or `None` at the closing delimiter.
    pub async fn next(&mut self) -> Option<Part> {
        let headers = match self.event().await {
            Piece::PartStart(h) => h,
            Piece::End => return None,
            other => panic!("expected a part, got {other:?}"),
        };
        let mut body = BytesMut::new();
        loop {
            match self.event().await {
                Piece::Data(b) => body.extend_from_slice(&b),
                Piece::PartEnd => break,
                other => panic!("unexpected {other:?} inside a part"),
            }
        }
        Some(Part {
            headers,
            body: body.freeze(),
        })
    }

    /// The next part, which must be a directive: its `directive` object.
    pub async fn directive(&mut self) -> Value {
        let part = self.next().await.expect("a directive part");
        assert!(part.headers.is_json(), "{:?}", part.headers);
        part.json()["directive"].clone()
    }

    /// Whether the stream then ends (END_STREAM).
    pub async fn stream_ends(&mut self) -> bool {
        within("the end of the stream", self.body.data())
            .await
            .is_none()
    }
}

/// Open the downchannel: 200 and a multipart/related body.
pub async fn downchannel(link: &Link, token: &Secret) -> Parts {
    let resp = within("the downchannel", link.get("/v20160207/directives", token))
        .await
        .expect("downchannel");
    assert_eq!(resp.status(), 200);
    Parts::new(resp)
}

/// A link with its downchannel open and SynchronizeState accepted.
pub async fn synced(sim: &Sim) -> (Link, Parts) {
    let link = sim.link().await;
    let token = sim.token();
    let down = downchannel(&link, &token).await;
    let (status, body) = event(
        &link,
        &token,
        &metadata("System", "SynchronizeState", json!({})),
    )
    .await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    (link, down)
}

/// `n` samples of a 440 Hz tone at 16 kHz, 16-bit little-endian.
pub fn tone(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let t = i as f64 / 16_000.0;
            ((6000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16).to_le_bytes()
        })
        .collect()
}

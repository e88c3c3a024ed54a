//! The control API of the AVS stand-in: plain HTTP/1.1 with JSON answers on
//! a separate loopback listener, so tests and benchmarks can inject faults,
//! push directives and read what the stand-in saw. The endpoints are listed
//! in the module documentation of [`crate::avs`]; every endpoint
//! answers 400 with `{"error": …}` naming a bad parameter.

use std::collections::HashMap;
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::state::{ConnCmd, DownMsg, Shared, Stats, Target};
use https::http::{self as h, Resp};

/// The longest `/wait` may wait.
const MAX_WAIT: Duration = Duration::from_secs(120);
/// Directive bodies (and their pushed attachment) are small.
const PUSH_LIMIT: usize = 64 * 1024;
/// The largest MP3 `/push?file=` attaches.
const MAX_PUSH_FILE: usize = 8 << 20;
/// The most copies one `/push?count=N` sends (a flood for abuse tests).
const MAX_PUSH_COUNT: u32 = 1_000_000;

/// Serve the control API until `shutdown`.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "control API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // A test waits on each answer: no Nagle delay on the last write.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, "control API: cannot set TCP_NODELAY: {e}");
        }
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, shared).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!("control connection ended: {e}");
                },
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// A control request that cannot be done: the status and why.
struct Fail(StatusCode, String);

impl Fail {
    fn resp(self) -> Resp {
        h::json(self.0, &json!({"error": self.1}))
    }
}

fn bad(msg: impl Into<String>) -> Fail {
    Fail(StatusCode::BAD_REQUEST, msg.into())
}

fn ok(extra: Value) -> Resp {
    let mut v = json!({"ok": true});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    h::json(StatusCode::OK, &v)
}

/// A query parameter parsed as `T`, or a 400 naming it.
fn param<T: FromStr>(q: &HashMap<String, String>, key: &str) -> Result<Option<T>, Fail> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("{key}={v}: not a valid value"))),
    }
}

fn target(q: &HashMap<String, String>, default: Target) -> Result<Target, Fail> {
    q.get("on")
        .map_or(Ok(default), |v| Target::parse(v).map_err(bad))
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Resp {
    let q = h::query(&req);
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    tracing::info!(%method, path, "control request");
    let result = match (method, path.as_str()) {
        (Method::GET, "/stats") => Ok(h::json(StatusCode::OK, &stats_json(&shared))),
        (Method::GET, "/wait") => wait(&q, &shared).await,
        (Method::GET, "/audio") => audio(&q, &shared),
        (Method::POST, "/goaway") => goaway(&q, &shared),
        (Method::POST, "/cut") => param::<u64>(&q, "connection").map(|only| {
            let n = shared.command(only, || ConnCmd::Cut);
            ok(json!({"connections": n}))
        }),
        (Method::POST, "/refuse") => refuse(&q, &shared),
        (Method::POST, "/status") => status(&q, &shared),
        (Method::POST, "/refuse_token") => refuse_token(&q, &shared),
        (Method::POST, "/delay") => delay(&q, &shared),
        (Method::POST, "/push") => push(req, q, &shared).await,
        (Method::POST, "/dialog") => dialog(&q, &shared),
        (Method::POST, "/answer") => answer(req, &shared).await,
        (Method::POST, "/sync") => sync(&q, &shared),
        (Method::POST, "/reset") => {
            shared.reset();
            Ok(ok(json!({})))
        }
        (m, p) => Ok(h::json(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no control endpoint {m} {p}")}),
        )),
    };
    result.unwrap_or_else(Fail::resp)
}

fn stats_json(shared: &Shared) -> Value {
    let mut v = json!(shared.stats());
    v["open"] = shared
        .connections()
        .into_iter()
        .map(|(id, peer, downchannel, synced)| {
            json!({"id": id, "peer": peer.to_string(), "downchannel": downchannel, "synced": synced})
        })
        .collect();
    v["scripted"] = json!(shared.interfaces.scripted());
    v["audio_player"] = shared.interfaces.audio_player_stats();
    v
}

fn goaway(q: &HashMap<String, String>, shared: &Shared) -> Result<Resp, Fail> {
    let only = param::<u64>(q, "connection")?;
    let end_downchannel = param::<bool>(q, "end_downchannel")?.unwrap_or(true);
    let n = shared.command(only, || ConnCmd::GoAway { end_downchannel });
    Ok(ok(json!({"connections": n})))
}

fn refuse(q: &HashMap<String, String>, shared: &Shared) -> Result<Resp, Fail> {
    let secs = param::<f64>(q, "secs")?.ok_or_else(|| bad("secs is required"))?;
    let d = Duration::try_from_secs_f64(secs)
        .map_err(|_| bad(format!("secs={secs}: not a duration")))?;
    shared.refuse_for(d);
    Ok(ok(json!({})))
}

fn status(q: &HashMap<String, String>, shared: &Shared) -> Result<Resp, Fail> {
    let code = param::<u16>(q, "code")?.ok_or_else(|| bad("code is required"))?;
    if !matches!(code, 400 | 403 | 415 | 429 | 500 | 503) {
        return Err(bad(format!(
            "code={code}: AVS answers 400, 403, 415, 429, 500 or 503"
        )));
    }
    let count = param::<u32>(q, "count")?.unwrap_or(1);
    shared.set_status(code, count, target(q, Target::Events)?);
    Ok(ok(json!({})))
}

/// `POST /refuse_token?on=TARGET[&count=N]`: the next N requests of that
/// kind (default 1, on events) get 403 for their token, which is then
/// refused on every request, as AVS does with a token it no longer takes
/// although LWA still calls it valid.
fn refuse_token(q: &HashMap<String, String>, shared: &Shared) -> Result<Resp, Fail> {
    let count = param::<u32>(q, "count")?.unwrap_or(1);
    shared.set_refuse_token(count, target(q, Target::Events)?);
    Ok(ok(json!({})))
}

fn delay(q: &HashMap<String, String>, shared: &Shared) -> Result<Resp, Fail> {
    let ms = param::<u64>(q, "ms")?.ok_or_else(|| bad("ms is required (0 ends the delay)"))?;
    shared.set_delay(Duration::from_millis(ms), target(q, Target::Events)?);
    Ok(ok(json!({})))
}

async fn push(
    req: Request<Incoming>,
    q: HashMap<String, String>,
    shared: &Shared,
) -> Result<Resp, Fail> {
    let tiny = match q.get("split").map(String::as_str) {
        None | Some("none") => false,
        Some("tiny") => true,
        Some(other) => return Err(bad(format!("split={other}: expected tiny or none"))),
    };
    let raw = match q.get("raw").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(bad(format!("raw={other}: expected true or false"))),
    };
    let attach = q.get("attach").cloned();
    let count = param::<u32>(&q, "count")?.unwrap_or(1);
    if !(1..=MAX_PUSH_COUNT).contains(&count) {
        return Err(bad(format!(
            "count={count}: expected 1 to {MAX_PUSH_COUNT}"
        )));
    }
    let body = http_body_util::Limited::new(req.into_body(), PUSH_LIMIT);
    let json = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|_| {
            bad(format!(
                "the directive body is cut off or over {PUSH_LIMIT} bytes"
            ))
        })?
        .to_bytes();
    if json.is_empty() {
        return Err(bad("the body must hold the directive JSON to push"));
    }
    // Anything is pushed as given, even malformed JSON, so the client's
    // handling of bad directives can be tested too.
    if let Ok(directive) = serde_json::from_slice::<serde_json::Value>(&json) {
        super::interfaces::sent(shared, &directive);
    }
    // `file=PATH`: the attachment is that MP3 (a test's longer track)
    // instead of the built-in answer.
    let mp3 = match q.get("file") {
        None => shared.answer_mp3.clone(),
        Some(path) => {
            let data = std::fs::read(path)
                .map_err(|e| bad(format!("file={path}: cannot read it: {e}")))?;
            if data.len() > MAX_PUSH_FILE {
                return Err(bad(format!(
                    "file={path}: over {MAX_PUSH_FILE} bytes; push a shorter MP3"
                )));
            }
            Bytes::from(data)
        }
    };
    if let Some(cid) = &attach {
        shared.interfaces.attached(cid, &mp3);
    }
    let attachment = attach.map(|cid| (cid, mp3));
    let mut pushed = None;
    for _ in 0..count {
        pushed = shared.push(DownMsg::Push {
            json: json.clone(),
            attachment: attachment.clone(),
            tiny,
            raw,
        });
        if pushed.is_none() {
            break;
        }
    }
    match pushed {
        Some(id) => Ok(ok(json!({"connection": id, "pushed": count}))),
        None => Ok(h::json(
            StatusCode::CONFLICT,
            &json!({"error": "no downchannel is open"}),
        )),
    }
}

/// `POST /answer` with `{"directives": [{"namespace", "name", "payload"}]}`:
/// the next Recognize answered with a Speak carries these directives after
/// it (each with a new messageId and the Recognize's dialogRequestId);
/// directives of interfaces the device did not declare are left out, as
/// AVS leaves them out.
async fn answer(req: Request<Incoming>, shared: &Shared) -> Result<Resp, Fail> {
    let body = http_body_util::Limited::new(req.into_body(), PUSH_LIMIT);
    let json = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|_| bad(format!("the body is cut off or over {PUSH_LIMIT} bytes")))?
        .to_bytes();
    let waiting = shared.interfaces.script(&json).map_err(bad)?;
    Ok(ok(json!({"scripted": waiting})))
}

/// `POST /sync?empty_200=true|false`: how SynchronizeState is answered
/// (Amazon documents both 200 and 204 for events).
fn sync(q: &HashMap<String, String>, shared: &Shared) -> Result<Resp, Fail> {
    let on = param::<bool>(q, "empty_200")?.ok_or_else(|| bad("empty_200 is required"))?;
    shared.set_sync_empty_200(on);
    Ok(ok(json!({"empty_200": on})))
}

fn dialog(q: &HashMap<String, String>, shared: &Shared) -> Result<Resp, Fail> {
    let stop = param::<u64>(q, "stop_capture_ms")?;
    let eos = param::<u64>(q, "end_of_speech_ms")?;
    let rms = param::<f64>(q, "silence_rms")?;
    let grace = param::<u64>(q, "close_grace_ms")?;
    let think = param::<u64>(q, "think_ms")?;
    let es_ms = param::<u64>(q, "expect_speech_ms")?;
    let es_count = param::<u32>(q, "expect_speech_count")?;
    let d = shared.set_dialog(|d| {
        if let Some(v) = stop {
            d.stop_capture = Duration::from_millis(v);
        }
        if let Some(v) = eos {
            d.end_of_speech = (v > 0).then(|| Duration::from_millis(v));
        }
        if let Some(v) = rms {
            d.silence_rms = v;
        }
        if let Some(v) = grace {
            d.close_grace = Duration::from_millis(v);
        }
        if let Some(v) = think {
            d.think = Duration::from_millis(v);
        }
        if let Some(v) = es_ms {
            d.expect_speech_ms = v;
        }
        if let Some(v) = es_count {
            d.expect_speech_count = v;
        }
    });
    Ok(ok(json!({"dialog": {
        "stop_capture_ms": d.stop_capture.as_millis() as u64,
        "end_of_speech_ms": d.end_of_speech.map_or(0, |e| e.as_millis() as u64),
        "silence_rms": d.silence_rms,
        "close_grace_ms": d.close_grace.as_millis() as u64,
        "think_ms": d.think.as_millis() as u64,
        "expect_speech_ms": d.expect_speech_ms,
        "expect_speech_count": d.expect_speech_count,
    }})))
}

/// The conditions `/wait` understands; each is "at least N".
const WAIT_KEYS: &[&str] = &[
    "connections",
    "current",
    "downchannels",
    "pings",
    "recognizes",
    "rejections",
    "count",
];

fn met(q: &HashMap<String, String>, s: &Stats) -> Result<bool, Fail> {
    let at_least = |key: &str, have: u64| -> Result<bool, Fail> {
        Ok(param::<u64>(q, key)?.is_none_or(|want| have >= want))
    };
    // Only answered, accepted events count (a Recognize in progress has
    // status 0 until it is answered).
    let accepted = |e: &&super::state::EventRecord| (200..300).contains(&e.status);
    let events = match q.get("event") {
        Some(name) => s
            .events
            .iter()
            .filter(accepted)
            .filter(|e| &e.name == name)
            .count() as u64,
        None => s.events.iter().filter(accepted).count() as u64,
    };
    // `arrived=NAME`: seen, answered or not (a Recognize under way).
    let arrived = q
        .get("arrived")
        .is_none_or(|name| s.events.iter().any(|e| &e.name == name));
    // `event=NAME` alone means "at least one".
    let want_events = param::<u64>(q, "count")?.or(q.contains_key("event").then_some(1));
    Ok(arrived
        && at_least("connections", s.connections.total)?
        && at_least("downchannels", s.downchannels)?
        && at_least("pings", s.pings)?
        && at_least("recognizes", s.recognizes.len() as u64)?
        && at_least("rejections", s.rejections.len() as u64)?
        && want_events.is_none_or(|want| events >= want)
        // `current` is exact: "wait until one connection is open".
        && param::<u64>(q, "current")?.is_none_or(|want| s.connections.current == want))
}

/// Wait until the statistics meet every condition given, or the timeout.
async fn wait(q: &HashMap<String, String>, shared: &Shared) -> Result<Resp, Fail> {
    if !q
        .keys()
        .any(|k| WAIT_KEYS.contains(&k.as_str()) || k == "event" || k == "arrived")
    {
        return Err(bad(format!(
            "give a condition: event=NAME [count=N], arrived=NAME, or one of {}",
            WAIT_KEYS.join(", ")
        )));
    }
    let timeout =
        Duration::from_millis(param::<u64>(q, "timeout_ms")?.unwrap_or(10_000)).min(MAX_WAIT);
    let mut changes = shared.subscribe();
    let until = async {
        loop {
            changes.borrow_and_update();
            if met(q, &shared.stats())? {
                return Ok::<_, Fail>(());
            }
            if changes.changed().await.is_err() {
                return Err(bad("the stand-in is shutting down"));
            }
        }
    };
    match tokio::time::timeout(timeout, until).await {
        Ok(Ok(())) => Ok(h::json(StatusCode::OK, &stats_json(shared))),
        Ok(Err(resp)) => Err(resp),
        Err(_) => Ok(h::json(
            StatusCode::REQUEST_TIMEOUT,
            &json!({"error": format!("the condition was not met within {timeout:?}"), "stats": stats_json(shared)}),
        )),
    }
}

/// `GET /audio?n=INDEX`: what Recognize number INDEX (0-based, as in
/// `/stats`) carried, as a 16 kHz mono 16-bit WAV file.
fn audio(q: &HashMap<String, String>, shared: &Shared) -> Result<Resp, Fail> {
    let n = param::<usize>(q, "n")?.ok_or_else(|| bad("n (the recognize index) is required"))?;
    let pcm = shared.audio(n).ok_or_else(|| {
        Fail(
            StatusCode::NOT_FOUND,
            format!("no audio kept for recognize {n} (only the last few are)"),
        )
    })?;
    let mut resp = Response::new(Full::new(wav(&pcm)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("audio/wav"),
    );
    Ok(resp)
}

fn wav(pcm: &[u8]) -> Bytes {
    let len = u32::try_from(pcm.len()).unwrap_or(u32::MAX - 36);
    let mut out = BytesMut::with_capacity(44 + pcm.len());
    out.put_slice(b"RIFF");
    out.put_u32_le(36 + len);
    out.put_slice(b"WAVEfmt ");
    out.put_u32_le(16);
    out.put_u16_le(1); // PCM
    out.put_u16_le(1); // mono
    out.put_u32_le(16_000);
    out.put_u32_le(32_000);
    out.put_u16_le(2);
    out.put_u16_le(16);
    out.put_slice(b"data");
    out.put_u32_le(len);
    out.put_slice(pcm);
    out.freeze()
}

//! Routing and the service loop: `run` takes its listener and shutdown
//! token from outside, so tests bind port 0 and stop it when they like.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use hyper::Request;
use hyper::body::Body;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::{CompanionConfig, read_secret};
use super::flow::{Clock, Flow, SystemClock};
use super::lwa_client::LwaClient;
use super::store::StoreHandle;
use super::{browser, device, pages, register, revoke};
use https::Peer;
use https::http::{self as h, Resp};

/// How often expired codes, states and sessions are deleted.
/// Short, so a pending registration leaves the disk soon after its code
/// expires (the cap on pending sessions also purges when it is reached).
const PURGE_EVERY: Duration = Duration::from_secs(30);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS files.
    #[error("server.cert_file, server.key_file or server.device_ca_file: {0}")]
    Tls(#[from] https::TlsError),
    /// A file a config key names holds the wrong thing.
    #[error("{key}: {message}; fix: {fix}")]
    File {
        /// The config key.
        key: String,
        /// What is wrong.
        message: String,
        /// What to do.
        fix: String,
    },
    /// The database.
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    /// The client secret file.
    #[error("lwa.client_secret_file: {0}; fix: {1}")]
    Secret(String, String),
    /// The LWA client.
    #[error("{0}")]
    Lwa(String),
}

/// Serve the companion on `listener` with the wall clock.
pub async fn run(
    listener: TcpListener,
    config: CompanionConfig,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    run_with_clock(listener, config, shutdown, Arc::new(SystemClock)).await
}

/// Serve with a given clock (tests move time to expire codes and tokens).
pub async fn run_with_clock(
    listener: TcpListener,
    config: CompanionConfig,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
) -> Result<(), StartError> {
    // Checked at load too; again here because the files may have changed
    // since, and a TLS error should name the config key.
    if let Some(bad) = config.file_problems().into_iter().next() {
        return Err(StartError::File {
            key: bad.key,
            message: bad.message,
            fix: bad.fix,
        });
    }
    let tls = https::server_config(
        &config.server.cert_file,
        &config.server.key_file,
        config.server.device_ca_file.as_deref(),
    )?;
    let secret = read_secret(&config.lwa.client_secret_file)
        .map_err(|(what, fix)| StartError::Secret(what, fix))?;
    let lwa = LwaClient::new(&config, secret).map_err(StartError::Lwa)?;
    let config = Arc::new(config);
    let opening = config.clone();
    let store = tokio::task::spawn_blocking(move || super::store::open(&opening))
        .await
        .map_err(|_| super::store::StoreError::Worker)??;
    let store = StoreHandle::new(store);
    let limits = config.server.limits();
    let flow = Arc::new(Flow::new(config, store, lwa, clock));

    let purger = {
        let flow = flow.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(PURGE_EVERY) => {}
                }
                let now = flow.now();
                match flow.store.call(move |s| s.purge(now)).await {
                    Ok(n) if n > 0 => tracing::debug!(rows = n, "purged expired rows"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
            }
        })
    };
    let supervisor = tokio::spawn(supervise(flow.clone(), shutdown.clone()));
    let refresher = tokio::spawn(super::refresh::run(flow.clone(), shutdown.clone()));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "avs-companion serving HTTPS");
        kit::notify::ready(&format!("serving HTTPS on {addr}"));
    }
    https::serve_with(listener, tls, limits, shutdown, move |req, peer| {
        let flow = flow.clone();
        async move { route(&flow, req, &peer).await }
    })
    .await;
    let _ = purger.await;
    let _ = supervisor.await;
    let _ = refresher.await;
    Ok(())
}

/// systemd's side (all no-ops outside systemd): feed the watchdog while the
/// database still answers, so a wedged service gets restarted, and say
/// STOPPING=1 as soon as shutdown starts.
async fn supervise(flow: Arc<Flow>, shutdown: CancellationToken) {
    let Some(every) = kit::notify::watchdog_interval() else {
        shutdown.cancelled().await;
        kit::notify::stopping();
        return;
    };
    // Twice per interval, as sd_watchdog_enabled(3) advises.
    let half = every / 2;
    loop {
        let now = flow.now();
        let alive = tokio::time::timeout(half, flow.store.call(move |s| s.pending_count(now)));
        match alive.await {
            Ok(Ok(_)) => kit::notify::watchdog(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "watchdog: the database does not answer; not feeding the watchdog")
            }
            Err(_) => tracing::warn!(
                "watchdog: the database took longer than {half:?}; not feeding the watchdog"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(half) => {}
        }
    }
    kit::notify::stopping();
}

/// Answer one request: the service's routing table. Public and generic
/// over the body so that `fuzz/fuzz_targets/companion_request.rs` can call
/// it without sockets or TLS; the service passes hyper's `Incoming`.
pub async fn route<B>(flow: &Flow, req: Request<B>, peer: &Peer) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match (&method, path.as_str()) {
        (&Method::GET, "/") => browser::home(flow, &h::query(&req), peer).await,
        (&Method::GET, "/authresponse") => {
            browser::auth_response(flow, &h::query(&req), req.headers()).await
        }
        (&Method::POST, "/provision/regCode") => {
            device_json(req, |body| async move {
                register::register(flow, &body, peer).await
            })
            .await
        }
        (&Method::POST, "/provision/accessToken") => {
            device_json(req, |body| async move {
                device::access_token(flow, &body, &peer.cert_names).await
            })
            .await
        }
        (&Method::POST, "/provision/revoke") => {
            device_json(req, |body| async move {
                revoke::revoke(flow, &body, &peer.cert_names).await
            })
            .await
        }
        (&Method::GET, p) if p.starts_with("/provision/") && p.len() < 64 => {
            let rest = &p["/provision/".len()..];
            match rest.strip_suffix("/login") {
                Some(code) => browser::start_login(flow, code, peer).await,
                None => browser::device_page(flow, rest, peer).await,
            }
        }
        (
            _,
            "/"
            | "/authresponse"
            | "/provision/regCode"
            | "/provision/accessToken"
            | "/provision/revoke",
        ) => h::plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => h::html(
            StatusCode::NOT_FOUND,
            pages::failure(
                "Page not found",
                "There is no page at this address.",
                "Start from this site's start page.",
            ),
        ),
    };
    // The path may hold a registration code: log the route, not the path.
    let route = if path.starts_with("/provision/")
        && !path.ends_with("regCode")
        && !path.ends_with("accessToken")
        && !path.ends_with("revoke")
    {
        "/provision/{regCode}".to_string()
    } else {
        h::loggable(&path)
    };
    tracing::debug!(%method, route, status = resp.status().as_u16(), peer = %peer.addr, "request");
    resp
}

async fn device_json<B, F, Fut>(req: Request<B>, f: F) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnOnce(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, device::DeviceError>>,
{
    let body = match h::read_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match f(body).await {
        Ok(v) => h::json(StatusCode::OK, &v),
        Err(e) => {
            let mut resp = h::json(e.status, &e.body());
            if let Some(secs) = e.retry_after {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, secs.into());
            }
            resp
        }
    }
}

//! The media tests' rig (`tests/media.rs`, `tests/media_speaker.rs`):
//! the files `scripts/make-media` makes, avs-sim's media server in this
//! process, ffmpeg's reference decode and a correlation.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use avsd::media::{self, Limits, MediaClient, MediaStream};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The rate the tests decode at (low, so correlations are cheap).
pub const RATE: u32 = 8000;

/// The media files, made once per run under target/ (never committed).
pub fn media_dir() -> &'static PathBuf {
    support::media::dir()
}

/// The media server on a free port, with a client that trusts its CA.
pub struct Server {
    pub base: String,
    pub client: MediaClient,
    http: reqwest::Client,
    shutdown: CancellationToken,
    _files: support::sim::Files,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    pub async fn start() -> Self {
        https::install_provider();
        let files = support::sim::files();
        let tls =
            https::server_config(&files.cert_file, &files.key_file, None).expect("TLS config");
        let media = avs_sim::media::Media::load(media_dir()).expect("the media files");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let base = format!("https://{}", listener.local_addr().expect("an address"));
        let shutdown = CancellationToken::new();
        tokio::spawn(avs_sim::media::run(listener, tls, media, shutdown.clone()));
        let client = MediaClient::new(Some(&files.ca_file)).expect("the media client");
        let pem = std::fs::read(&files.ca_file).expect("the CA");
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("PEM"))
            .build()
            .expect("a client");
        Self {
            base,
            client,
            http,
            shutdown,
            _files: files,
        }
    }

    pub fn open(&self, path: &str, limits: Limits) -> MediaStream {
        media::open(&format!("{}{path}", self.base), 0, &self.client, limits)
    }

    pub async fn stats(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/stats", self.base))
            .send()
            .await
            .expect("stats");
        r.json().await.expect("stats JSON")
    }

    /// The paths requested so far, with their Range headers.
    pub async fn requests(&self) -> Vec<(String, Option<String>)> {
        let stats = self.stats().await;
        stats["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .map(|r| {
                (
                    r["path"].as_str().unwrap_or("").to_string(),
                    r["range"].as_str().map(str::to_string),
                )
            })
            .collect()
    }
}

/// ffmpeg's decode of `file`, mono at [`RATE`].
pub fn reference(file: &str) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-i"])
        .arg(media_dir().join(file))
        .args(["-f", "f32le", "-ac", "1", "-ar", &RATE.to_string(), "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success(), "ffmpeg failed on {file}");
    out.stdout
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The best normalised correlation of a 2 s window of `got` against
/// `want`, over lags up to 150 ms either way (encoder delays differ).
pub fn correlation(got: &[f32], want: &[f32]) -> f64 {
    let window = 2 * RATE as usize;
    let start = RATE as usize; // 1 s in: past any start-up of either decoder
    let max_lag = (RATE as usize * 150) / 1000;
    assert!(
        got.len() >= start + window + max_lag,
        "only {} samples decoded",
        got.len()
    );
    let a = &got[start..start + window];
    let energy = |s: &[f32]| s.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
    let ea = energy(a);
    let mut best = 0.0f64;
    for lag in 0..=2 * max_lag {
        let from = start + lag - max_lag;
        let Some(b) = want.get(from..from + window) else {
            continue;
        };
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        best = best.max(dot / (ea * energy(b)).sqrt().max(1e-12));
    }
    best
}

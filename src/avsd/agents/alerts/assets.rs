//! A SetAlert's sounds (reminders bring their own): fetched once the alert
//! is set and kept under `<state>/alerts/assets/`, so that at its time the
//! alert plays them with no network. An alert whose sounds are not all
//! there when it is due rings the tone made in code instead, at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::store::StoredAlert;
use kit::fsutil;

/// The largest sound kept (an alert's chime is seconds of MP3).
pub const MAX_ASSET_BYTES: usize = 2 * 1024 * 1024;
/// How long one download may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// Downloads at once: alerts are set one at a time; a burst of SetAlerts
/// waits its turn instead of opening a connection each.
const FETCHES: usize = 2;

/// Fetches and finds the alerts' sounds.
pub struct Assets {
    dir: PathBuf,
    http: Option<reqwest::Client>,
    slots: Arc<Semaphore>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Assets {
    /// Sounds kept in `dir`; `ca_file` is trusted besides the system's
    /// roots (the AVS stand-in's CA in tests, as for the AVS connection).
    pub fn new(dir: PathBuf, ca_file: Option<&Path>) -> Assets {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("avsd/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca_file {
            match std::fs::read(ca).map(|pem| reqwest::Certificate::from_pem_bundle(&pem)) {
                Ok(Ok(certs)) => builder = builder.tls_certs_merge(certs),
                Ok(Err(e)) => tracing::warn!(
                    "avs.ca_file {}: {e}; alert sounds use the system's roots only",
                    ca.display()
                ),
                Err(e) => tracing::warn!(
                    "cannot read avs.ca_file {}: {e}; alert sounds use the system's roots only",
                    ca.display()
                ),
            }
        }
        let http = match builder.build() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(
                    "cannot make the HTTPS client for alert sounds: {e}; alerts ring the built-in tone"
                );
                None
            }
        };
        Assets {
            dir,
            http,
            slots: Arc::new(Semaphore::new(FETCHES)),
        }
    }

    /// Where `alert`'s sound `asset_id` is kept (hex names: AVS's ids are
    /// not file names).
    fn path(&self, token: &str, asset_id: &str) -> PathBuf {
        self.dir
            .join(format!("{}-{}.mp3", hex(token), hex(asset_id)))
    }

    /// The sounds to play, in play order, if all of them are kept.
    pub fn ready(&self, alert: &StoredAlert) -> Option<Vec<PathBuf>> {
        if alert.asset_play_order.is_empty() {
            return None;
        }
        let paths: Vec<PathBuf> = alert
            .asset_play_order
            .iter()
            .map(|id| self.path(&alert.token, id))
            .collect();
        paths.iter().all(|p| p.exists()).then_some(paths)
    }

    /// Forget `token`'s sounds.
    pub fn forget(&self, alert: &StoredAlert) {
        for a in &alert.assets {
            let _ = std::fs::remove_file(self.path(&alert.token, &a.asset_id));
        }
    }

    /// Fetch `alert`'s sounds in the background (at most [`FETCHES`] at
    /// once; an alert that finds no free slot rings the tone).
    pub fn fetch(self: &Arc<Self>, alert: &StoredAlert) {
        if alert.assets.is_empty() {
            return;
        }
        let Some(http) = self.http.clone() else {
            return;
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "alert {}: {FETCHES} sound downloads already run; it will ring the built-in tone",
                alert.token
            );
            return;
        };
        let me = self.clone();
        let alert = alert.clone();
        tokio::spawn(async move {
            if let Err(e) = fsutil::ensure_private_dir(&me.dir) {
                tracing::error!("cannot make {}: {e}", me.dir.display());
                return;
            }
            for a in &alert.assets {
                let path = me.path(&alert.token, &a.asset_id);
                match get(&http, &a.url).await {
                    Ok(bytes) => {
                        if let Err(e) = fsutil::write_atomic(&path, &bytes) {
                            tracing::error!("cannot keep alert sound {}: {e}", path.display());
                        } else {
                            tracing::info!(
                                "alert {}: sound {} kept ({} bytes)",
                                alert.token,
                                a.asset_id,
                                bytes.len()
                            );
                        }
                    }
                    Err(e) => tracing::warn!(
                        "alert {}: cannot fetch sound {} from {}: {e}; it will ring the built-in tone",
                        alert.token,
                        a.asset_id,
                        a.url
                    ),
                }
            }
            drop(permit);
        });
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_ASSET_BYTES {
            return Err(format!("larger than {MAX_ASSET_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

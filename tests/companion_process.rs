//! `avs-companion` as a process: certificates from its own `make-certs`, the
//! whole flow, a `kill -9` after the user logged in, refreshes of
//! short-lived tokens (each rotating the refresh token) and a revoked one,
//! and a look through every response and log line for the client secret and
//! every refresh token LWA issued.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use support::companion::*;
use tokio::process::Command;

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(support::bin("avs-companion"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_and_help() {
    let out = cli(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("avs-companion "));
    let out = cli(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["--config", "--check-config", "make-certs"] {
        assert!(help.contains(word), "{help}");
    }
    let out = cli(&["--config", "/nonexistent/companion.toml", "--check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/companion.toml"));
}

#[test]
fn unit_file_passes_systemd_analyze_verify_and_security() {
    let unit =
        std::fs::read_to_string(support::repo().join("systemd/avs-companion.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/avs-companion "));
    for key in [
        "User=avs-companion",
        "StateDirectory=avs-companion",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(unit.contains(key), "{key}");
    }
    // verify only fails for a missing binary, so point it at the built one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("avs-companion.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/avs-companion", support::bin("avs-companion")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", support::man_pages(dir.path()))
        .output()
        .expect("systemd-analyze is needed for this test (apt-get install systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify said:\n{said}"
    );

    // Issue 8: an exposure of 2.0 or lower (systemd-resolved scores 2.2).
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "avs-companion.service scores above 2.0:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("Overall exposure level for avs-companion.service"),
        "systemd-analyze security printed no score:\n{report}"
    );
}

/// Access tokens the stand-in issues live this long…
const TOKEN_LIFETIME: u64 = 4;
/// …and the companion refreshes them when less than this is left.
const REFRESH_MARGIN: u64 = 2;

async fn start_companion(
    config: &std::path::Path,
    state: &std::path::Path,
) -> (
    tokio::process::Child,
    String,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    let mut cmd = Command::new(support::bin("avs-companion"));
    cmd.arg("--config")
        .arg(config)
        .env("STATE_DIRECTORY", state)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    spawn_listening(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_flow_survives_kill_and_leaks_no_secret() {
    let env = Env::new();
    // The companion's own certificates, made the documented way.
    let certs = env.dir.path().join("certs");
    let out = cli(&[
        "make-certs",
        "--out",
        certs.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
        "--device",
        &format!("{PRODUCT}:0001"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "ca.crt",
        "ca/ca.key",
        "server.crt",
        "server.key",
        "device-1.crt",
        "device-1.key",
    ] {
        assert!(certs.join(f).is_file(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(certs.join("server.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // A fixed port: the redirect URI registered at the stand-in must survive
    // the restart. Bound once here to find a free one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("https://127.0.0.1:{port}");
    let redirect = format!("{base}/authresponse");
    let lifetime = TOKEN_LIFETIME.to_string();
    let sim = Sim::start(&env, &redirect, &["--token-lifetime", &lifetime]).await;
    let toml = env
        .companion_toml(&format!("127.0.0.1:{port}"), &redirect, &sim.base, "")
        .replace(
            "[lwa]\n",
            &format!("[lwa]\nrefresh_margin_secs = {REFRESH_MARGIN}\n"),
        )
        .replace(
            &env.cert_file.display().to_string(),
            &certs.join("server.crt").display().to_string(),
        )
        .replace(
            &env.key_file.display().to_string(),
            &certs.join("server.key").display().to_string(),
        )
        .replace("level = \"debug\"", "level = \"trace\"")
        .replace(&format!("database = \"{}\"\n", env.db.display()), "");
    let config = env.dir.path().join("companion.toml");
    std::fs::write(&config, toml).unwrap();
    let state = env.dir.path().join("state-dir");

    let (mut first, shown, log1) = start_companion(&config, &state).await;
    assert_eq!(shown, base);

    let roots = [
        reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.crt")).unwrap()).unwrap(),
        reqwest::Certificate::from_pem(env.ca.pem.cert.as_bytes()).unwrap(),
    ];
    let builder = || {
        reqwest::Client::builder()
            .tls_certs_only(roots.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(WAIT)
    };
    let device = Device {
        client: builder().build().unwrap(),
        base: base.clone(),
    };
    let browser = Browser {
        client: builder().cookie_store(true).build().unwrap(),
    };
    let mut seen = String::new();

    let (status, reg) = device.register(PRODUCT, "0001").await;
    assert_eq!(status, 200, "{reg}");
    let reg_body = reg.to_string();
    // The session id goes to the device in this answer, and nowhere else.
    let session = reg["sessionId"].as_str().unwrap().to_string();
    let (status, page, _) = browser.get(reg["loginUrl"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    seen.push_str(&page);
    let consent_url = browser
        .press_login(&press_url(reg["loginUrl"].as_str().unwrap(), &page))
        .await;
    let back = browser.consent(&consent_url, true).await;
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    seen.push_str(&page);

    // The user is done; the service dies hard before the device polls.
    first.kill().await.unwrap();
    let (second, _, log2) = start_companion(&config, &state).await;
    assert!(
        state.join("companion.sqlite3").is_file(),
        "STATE_DIRECTORY is honoured"
    );
    let mode = std::fs::metadata(state.join("companion.sqlite3"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let (status, v) = device.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    seen.push_str(&v.to_string());

    // Let the short-lived token come within the refresh margin, twice: each
    // poll then makes the companion refresh at LWA, which rotates the
    // refresh token; the second refresh only works with the rotated one
    // stored.
    let mut token = v["access_token"].as_str().unwrap().to_string();
    let mut expires_in = v["expires_in"].as_u64().unwrap();
    assert!(expires_in <= TOKEN_LIFETIME, "{v}");
    for round in 1..=2 {
        let grants = sim.counter("refresh_grants").await;
        tokio::time::sleep(Duration::from_secs(
            expires_in.saturating_sub(REFRESH_MARGIN),
        ))
        .await;
        let (status, v) = device.poll(&session).await;
        assert_eq!(status, 200, "refresh {round}: {v}");
        seen.push_str(&v.to_string());
        assert_ne!(v["access_token"], token.as_str(), "refresh {round}");
        assert_eq!(
            sim.counter("refresh_grants").await,
            grants + 1,
            "refresh {round}"
        );
        token = v["access_token"].as_str().unwrap().to_string();
        expires_in = v["expires_in"].as_u64().unwrap();
    }
    assert_eq!(
        sim.get("counters").await["errors"]["invalid_grant"].as_u64(),
        None,
        "every refresh used the refresh token LWA issued last"
    );
    // The user revokes access at Amazon: the next refresh ends the session.
    let revoked = sim.control("revoke", json!({})).await;
    assert_eq!(revoked["revoked"], 1);
    tokio::time::sleep(Duration::from_secs(
        expires_in.saturating_sub(REFRESH_MARGIN),
    ))
    .await;
    let (status, v) = device.poll(&session).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("access_denied")));
    seen.push_str(&v.to_string());
    assert_eq!(
        sim.get("counters").await["errors"]["invalid_grant"].as_u64(),
        Some(1)
    );
    // Other routes and errors, for the leak check.
    for body in [json!({"sessionId": "nope"}), json!({})] {
        seen.push_str(
            &device
                .post("/provision/accessToken", body)
                .await
                .1
                .to_string(),
        );
    }
    seen.push_str(&browser.get(&back).await.1);
    seen.push_str(&browser.get(&format!("{base}/")).await.1);

    // SIGTERM stops it cleanly, with exit status 0.
    let mut second = second;
    let pid = second.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(WAIT, second.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // One refresh token from the code exchange, a rotated one per refresh.
    let refresh = sim.issued_refresh_tokens().await;
    let grants = sim.counter("refresh_grants").await;
    assert!(grants >= 2, "{grants}");
    assert_eq!(refresh.len() as u64, 1 + grants, "{refresh:?}");
    let logs = format!("{}{}", log1.lock().unwrap(), log2.lock().unwrap());
    for line in [
        "device linked",
        "access token refreshed",
        "LWA refused the refresh token",
    ] {
        assert!(logs.contains(line), "{line:?} not in the log:\n{logs}");
    }
    let secrets = std::iter::once(("client secret", env.secret.as_str()))
        .chain(refresh.iter().map(|t| ("refresh token", t.as_str())));
    for (what, secret) in secrets {
        assert!(!reg_body.contains(secret), "{what} in the registration");
        assert!(!seen.contains(secret), "{what} in a response");
        assert!(!logs.contains(secret), "{what} in the log:\n{logs}");
    }
    assert!(!seen.contains(&session), "session id in a response");
    assert!(!logs.contains(&session), "session id in the log:\n{logs}");
    let code = query_of(&back)["code"].clone();
    assert!(!logs.contains(&code), "authorization code in the log");
}

//! The companion on PostgreSQL, as an operator meets it: `--check-config`
//! connects to the database and says in words what is wrong (unreachable,
//! authentication, a schema newer than the program), and instances sharing
//! one database refresh a session once.

use std::process::Command;

use support::companion::Env;
use support::postgres::Postgres;

/// The test companion config, on PostgreSQL database `url`.
fn pg_toml(env: &Env, url: &str, password_file: &std::path::Path) -> String {
    let sqlite = format!("database = \"{}\"", env.db.display());
    env.companion_toml(
        "127.0.0.1:0",
        "https://localhost:8443/authresponse",
        "https://127.0.0.1:9",
        "",
    )
    .replace(
        &sqlite,
        &format!(
            "url = \"{url}\"\npassword_file = \"{}\"",
            password_file.display()
        ),
    )
}

/// `avs-companion --check-config` on `toml`: (exit code, stdout, stderr).
fn check(env: &Env, toml: &str) -> (i32, String, String) {
    let path = env.dir.path().join("fleet.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(support::bin("avs-companion"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_connects_to_postgresql_and_says_what_is_wrong() {
    let mut pg = Postgres::start();
    let env = Env::new();
    let url = pg.fresh_database();
    let db = url.rsplit('/').next().unwrap().to_string();

    let (code, out, err) = check(&env, &pg_toml(&env, &url, &pg.password_file()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("schema:       no schema yet"), "{out}");

    // The service migrates at start; the check then finds it current.
    let mut config = avs_companion::CompanionConfig::default();
    config.storage.url = Some(url.clone());
    config.storage.password_file = Some(pg.password_file());
    drop(avs_companion::store::open(&config).unwrap());
    let (code, out, err) = check(&env, &pg_toml(&env, &url, &pg.password_file()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(", current"), "{out}");

    let wrong = env.dir.path().join("wrong-password");
    std::fs::write(&wrong, "nope\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (code, _, err) = check(&env, &pg_toml(&env, &url, &wrong));
    assert_eq!(code, 1);
    assert!(err.contains("authentication failed"), "{err}");

    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, _, err) = check(&env, &pg_toml(&env, &url, &wrong));
    assert_eq!(code, 1);
    assert!(
        err.contains("storage.password_file") && err.contains("chmod 600"),
        "{err}"
    );

    pg.psql(
        &db,
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
         VALUES (99, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
    );
    let (code, _, err) = check(&env, &pg_toml(&env, &url, &pg.password_file()));
    assert_eq!(code, 1);
    assert!(
        err.contains("schema version 99 is newer than this avs-companion knows"),
        "{err}"
    );

    pg.stop();
    let (code, _, err) = check(&env, &pg_toml(&env, &url, &pg.password_file()));
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the database"), "{err}");
}

/// Instances A and B of the companion in-process, sharing one PostgreSQL
/// database and a clock; the redirect URI (so every login link) is A's.
struct Fleet {
    env: Env,
    sim: support::companion::Sim,
    a: support::companion::Companion,
    b: support::companion::Companion,
    clock: std::sync::Arc<avs_companion::flow::ManualClock>,
    _pg: Postgres,
}

impl Fleet {
    async fn start() -> Self {
        let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
        let env = Env::new();
        let url = pg.fresh_database();
        let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redirect = format!("https://{}/authresponse", la.local_addr().unwrap());
        let sim = support::companion::Sim::start(&env, &redirect, &[]).await;
        let clock = std::sync::Arc::new(avs_companion::flow::ManualClock::new());
        let config = |l: &tokio::net::TcpListener| {
            let toml = pg_toml(&env, &url, &pg.password_file())
                .replace("https://localhost:8443/authresponse", &redirect)
                .replace("https://127.0.0.1:9", &sim.base)
                .replace("127.0.0.1:0", &l.local_addr().unwrap().to_string());
            env.companion_config(&toml)
        };
        let (ca, cb) = (config(&la), config(&lb));
        let a = support::companion::Companion::start(la, ca, clock.clone()).await;
        let b = support::companion::Companion::start(lb, cb, clock.clone()).await;
        Self {
            env,
            sim,
            a,
            b,
            clock,
            _pg: pg,
        }
    }

    fn device(&self, c: &support::companion::Companion) -> support::companion::Device {
        support::companion::Device {
            client: self.env.client(),
            base: c.base.clone(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_moves_between_instances_and_concurrent_polls_on_both_refresh_once() {
    let f = Fleet::start().await;
    let (a, b) = (f.device(&f.a), f.device(&f.b));
    // Registered on B; the user logs in through A; the device polls B.
    let (_, session, login_url) = b.register_ok("0001").await;
    assert!(login_url.starts_with(&f.a.base), "{login_url}");
    let browser = support::companion::Browser {
        client: f.env.client_builder().cookie_store(true).build().unwrap(),
    };
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    f.clock.advance(5);
    let (status, v) = b.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    let first = v["access_token"].as_str().unwrap().to_string();

    // Within the refresh margin: four polls at once, two on each instance,
    // while the stand-in holds the refresh.
    f.clock.advance(3100);
    f.sim
        .control("delay", serde_json::json!({"count": 1, "millis": 300}))
        .await;
    let (r1, r2, r3, r4) = tokio::join!(
        a.poll(&session),
        b.poll(&session),
        a.poll(&session),
        b.poll(&session)
    );
    let tokens: Vec<String> = [r1, r2, r3, r4]
        .into_iter()
        .map(|(status, v)| {
            assert_eq!(status, 200, "{v}");
            v["access_token"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        tokens.iter().all(|t| *t == tokens[0] && *t != first),
        "one new token for all: {tokens:?}"
    );
    assert_eq!(f.sim.counter("refresh_grants").await, 1);
    assert_eq!(
        f.sim.get("counters").await["errors"]["invalid_grant"].as_u64(),
        None
    );
    f.a.stop().await;
    f.b.stop().await;
}

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

    // Sealed with key k1: the check opens the database's key check with
    // the key file, and tells a different key apart.
    let key = env.dir.path().join("store.key");
    let write_key = || {
        std::fs::write(
            &key,
            avs_companion::store::seal::new_key_line("k1").unwrap(),
        )
        .unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    };
    write_key();
    let original = std::fs::read(&key).unwrap();
    config.storage.key_file = Some(key.clone());
    drop(avs_companion::store::open(&config).unwrap());
    let with_key =
        pg_toml(&env, &url, &pg.password_file()) + &format!("key_file = \"{}\"\n", key.display());
    let (code, out, err) = check(&env, &with_key);
    assert_eq!(code, 0, "{out}{err}");
    write_key();
    let (code, _, err) = check(&env, &with_key);
    assert_eq!(code, 1);
    assert!(
        err.contains("key `k1` in storage.key_file is not the key this database was sealed with"),
        "{err}"
    );
    std::fs::write(&key, original).unwrap();
    let key_line = format!("key_file = \"{}\"\n", key.display());

    let wrong = env.dir.path().join("wrong-password");
    std::fs::write(&wrong, "nope\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (code, _, err) = check(&env, &(pg_toml(&env, &url, &wrong) + &key_line));
    assert_eq!(code, 1);
    assert!(err.contains("authentication failed"), "{err}");

    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, _, err) = check(&env, &(pg_toml(&env, &url, &wrong) + &key_line));
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
    let (code, _, err) = check(
        &env,
        &(pg_toml(&env, &url, &pg.password_file()) + &key_line),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("schema version 99 is newer than this avs-companion knows"),
        "{err}"
    );

    pg.stop();
    let (code, _, err) = check(
        &env,
        &(pg_toml(&env, &url, &pg.password_file()) + &key_line),
    );
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
    pg: Postgres,
    /// The database's name.
    db: String,
}

impl Fleet {
    /// `lwa_extra`: lines added to both instances' `[lwa]`.
    async fn start(lwa_extra: &str) -> Self {
        let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
        let env = Env::new();
        let url = pg.fresh_database();
        let db = url.rsplit('/').next().unwrap().to_string();
        let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redirect = format!("https://{}/authresponse", la.local_addr().unwrap());
        let sim = support::companion::Sim::start(&env, &redirect, &[]).await;
        let clock = std::sync::Arc::new(avs_companion::flow::ManualClock::new());
        let config = |l: &tokio::net::TcpListener| {
            let toml = pg_toml(&env, &url, &pg.password_file())
                .replace("https://localhost:8443/authresponse", &redirect)
                .replace("https://127.0.0.1:9", &sim.base)
                .replace("127.0.0.1:0", &l.local_addr().unwrap().to_string())
                .replace("\n[products]", &format!("{lwa_extra}\n\n[products]"));
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
            pg,
            db,
        }
    }

    /// Register on B, log in through A, first token from B: the session id.
    async fn link(&self, dsn: &str) -> String {
        let (_, session, login_url) = self.device(&self.b).register_ok(dsn).await;
        assert!(login_url.starts_with(&self.a.base), "{login_url}");
        let browser = support::companion::Browser {
            client: self
                .env
                .client_builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        };
        let consent = browser.open_device_page(&login_url).await;
        let back = browser.consent(&consent, true).await;
        let (status, page, _) = browser.get(&back).await;
        assert_eq!(status, 200, "{page}");
        session
    }

    /// `sql`'s one value, from the shared database.
    async fn query(&self, sql: &str) -> String {
        let (pg, db, sql) = (&self.pg, self.db.clone(), sql.to_string());
        tokio::task::block_in_place(|| pg.psql(&db, &sql))
            .trim()
            .to_string()
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
    let f = Fleet::start("").await;
    let (a, b) = (f.device(&f.a), f.device(&f.b));
    // Registered on B; the user logs in through A; the device polls B.
    let session = f.link("0001").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refresh_on_two_instances_refreshes_each_due_session_once() {
    let f = Fleet::start("background_refreshes_per_second = 2").await;
    let n = 6;
    for i in 0..n {
        f.link(&format!("bg-{i}")).await;
    }
    assert_eq!(
        f.query("SELECT count(*) FROM sessions WHERE status = 'linked' AND token_version = 1")
            .await,
        n.to_string()
    );
    assert_eq!(f.sim.counter("refresh_grants").await, 0, "not due yet");
    // Into every session's refresh margin: both instances' refreshers
    // lease them, without any device asking.
    f.clock.advance(3100);
    let done = format!(
        "SELECT count(*) = {n} FROM sessions WHERE token_version = 2 AND lease_token IS NULL"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while f.query(&done).await != "t" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every session refreshed: {}",
            f.query("SELECT string_agg(token_version || '/' || coalesce(lease_token, '-'), ' ') FROM sessions").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // No lease is held, so no refresh is under way: each session was
    // refreshed once, by one of the two instances.
    assert_eq!(f.sim.counter("refresh_grants").await, n);
    assert_eq!(
        f.sim.get("counters").await["errors"]["invalid_grant"].as_u64(),
        None
    );
    // The devices get the refreshed tokens from the database.
    let stored = f
        .query("SELECT count(DISTINCT access_token) FROM sessions WHERE access_expires_at > 0")
        .await;
    assert_eq!(stored, n.to_string());
    f.a.stop().await;
    f.b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_is_away_valid_tokens_still_answer_and_nothing_is_lost() {
    let mut f = Fleet::start("").await;
    let (a, b) = (f.device(&f.a), f.device(&f.b));
    let session = f.link("0001").await;
    f.clock.advance(5);
    let (status, v) = b.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    let first = v["access_token"].as_str().unwrap().to_string();

    tokio::task::block_in_place(|| f.pg.stop());
    let (status, v) = b.poll(&session).await;
    assert_eq!(
        (status, v["access_token"].as_str()),
        (200, Some(first.as_str())),
        "{v}"
    );
    let (status, v) = a.poll(&session).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (500, Some("server_error")),
        "A never gave this session a token: {v}"
    );

    tokio::task::block_in_place(|| f.pg.resume());
    let (status, v) = a.poll(&session).await;
    assert_eq!(
        (status, v["access_token"].as_str()),
        (200, Some(first.as_str())),
        "{v}"
    );
    // Refreshes work again once it is back, through reconnected pools.
    f.clock.advance(3100);
    let (status, v) = b.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    assert_ne!(v["access_token"].as_str(), Some(first.as_str()));
    assert_eq!(f.sim.counter("refresh_grants").await, 1);
    f.a.stop().await;
    f.b.stop().await;
}

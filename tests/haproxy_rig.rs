//! The haproxy rig of the fleet tests (`support::haproxy`) against plain
//! TCP backends that say who they are: connections are spread round robin,
//! counted per backend, redispatched when a backend is gone, and backends
//! can be added and removed while it runs.

use std::net::SocketAddr;

use support::haproxy::Haproxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A backend answering every connection with `name` and closing it.
async fn backend(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
    backend_on(name, "127.0.0.1:0").await
}

async fn backend_on(name: &'static str, addr: &str) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind(addr).await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            // Health checks connect and close at once; ignore their errors.
            let _ = s.write_all(name.as_bytes()).await;
        }
    });
    (addr, task)
}

/// Who answered one connection through haproxy.
async fn who(h: &Haproxy) -> String {
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spreads_redispatches_and_changes_backends() {
    let (a, a_task) = backend("a").await;
    let (b, _b_task) = backend("b").await;
    let h = Haproxy::start(&[a, b]).await;
    h.wait_status("s0", "UP").await;
    h.wait_status("s1", "UP").await;
    let before = h.served().await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(who(&h).await);
    }
    assert_eq!(seen.iter().filter(|w| *w == "a").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|w| *w == "b").count(), 3, "{seen:?}");
    let after = h.served().await;
    for s in ["s0", "s1"] {
        assert_eq!(after[s] - before[s], 3, "{before:?} → {after:?}");
    }

    // Backend a dies: every connection lands on b, even before the health
    // check notices (a refused connect is redispatched).
    a_task.abort();
    let _ = a_task.await;
    for _ in 0..4 {
        assert_eq!(who(&h).await, "b");
    }
    h.wait_status("s0", "DOWN").await;
    // It comes back on its port and gets connections again.
    let (_, _a_again) = backend_on("a", &a.to_string()).await;
    h.wait_status("s0", "UP").await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(who(&h).await);
    }
    assert!(seen.contains(&"a".to_string()), "{seen:?}");

    // A third backend joins; the second leaves.
    let (c, _c_task) = backend("c").await;
    h.add("s2", c).await;
    h.remove("s1").await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(who(&h).await);
    }
    assert!(seen.contains(&"c".to_string()), "{seen:?}");
    assert!(!seen.contains(&"b".to_string()), "{seen:?}");
    assert!(!h.backends().await.contains_key("s1"));
}

/// Two companion processes on one SQLite file behind haproxy: the TLS
/// session is the device's with the companion, so its client certificate
/// is what the companion checks; a killed instance's connections go to the
/// other, and the restarted one serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_pass_through_to_companions() {
    use support::companion::{Device, Env, PRODUCT};
    use support::fleet::{Fleet, Store};

    let env = Env::new();
    let store = Store::sqlite(&env.db);
    let lb: SocketAddr = format!("127.0.0.1:{}", support::haproxy::free_port())
        .parse()
        .unwrap();
    let redirect = format!("https://{lb}/authresponse");
    let extra = format!("device_ca_file = \"{}\"", env.ca_file.display());
    // No LWA call is made: registration stays inside the companion.
    let mut fleet = Fleet::start(&env, 2, |listen| {
        env.companion_toml(
            &listen.to_string(),
            &redirect,
            "https://127.0.0.1:9",
            &extra,
        )
        .replace(
            &format!("[storage]\ndatabase = \"{}\"\n", env.db.display()),
            &format!("[storage]\n{}", store.storage),
        ) + "\n[limits]\nregistrations_per_address_per_minute = 1000\n\
             registrations_per_device_per_minute = 1000\n"
    })
    .await;
    let h = Haproxy::start_on(lb, &fleet.addrs()).await;
    h.wait_status("s0", "UP").await;
    h.wait_status("s1", "UP").await;
    let with_cert = Device {
        client: env
            .client_builder()
            .identity(env.device_identity(&format!("{PRODUCT}:0001")))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        base: format!("https://{lb}"),
    };
    let without = Device {
        client: env
            .client_builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        base: format!("https://{lb}"),
    };
    for _ in 0..2 {
        let (status, v) = with_cert.register(PRODUCT, "0001").await;
        assert_eq!(status, 200, "{v}");
        assert!(
            v["loginUrl"].as_str().unwrap().starts_with(&with_cert.base),
            "{v}"
        );
        let (status, v) = without.register(PRODUCT, "0001").await;
        assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));
        // The certificate names the device: another serial is refused.
        let (status, _) = with_cert.register(PRODUCT, "0002").await;
        assert_eq!(status, 401);
    }
    let served = h.served().await;
    assert!(served.values().all(|n| *n >= 3), "{served:?}");

    // kill -9 one: the other answers everything; back, it serves again.
    fleet.kill(0).await;
    assert!(!fleet.instances[0].running());
    for _ in 0..3 {
        assert_eq!(with_cert.register(PRODUCT, "0001").await.0, 200);
    }
    h.wait_status("s0", "DOWN").await;
    fleet.restart(0).await;
    h.wait_status("s0", "UP").await;
    let before = h.served().await["s0"];
    for _ in 0..4 {
        assert_eq!(with_cert.register(PRODUCT, "0001").await.0, 200);
    }
    assert!(h.served().await["s0"] > before);
}

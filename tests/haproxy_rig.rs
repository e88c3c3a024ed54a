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

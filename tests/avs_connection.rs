//! avsd keeps the one AVS HTTP/2 connection alive against `avs-sim avs`:
//! downchannel, Alexa.Discovery and SynchronizeState in order, directives
//! to their handlers, GOAWAY handover, cuts and outages with back-off, and
//! a refused token renewed through the companion.

use std::time::{Duration, Instant};

use avsctl::proxy::DialogProxy;
use serde_json::json;
use support::system::{AvsSim, World, wait_connection, wait_connection_within, wait_state};

async fn dialog_proxy(world: &World) -> DialogProxy<'static> {
    DialogProxy::new(&world.bus.connect().await).await.unwrap()
}

/// A logged-in avsd connected to a fresh AVS stand-in.
struct Connected {
    world: World,
    avs: AvsSim,
    avsd: support::Daemon,
    auth: avsctl::proxy::AuthorizationProxy<'static>,
    dialog: DialogProxy<'static>,
}

/// Tokens living `token_lifetime` s, renewed `renew_before` s ahead;
/// `avs_extra` is added to avsd's `[avs]` section.
async fn connected(token_lifetime: u64, renew_before: u64, avs_extra: &str) -> Connected {
    let world = World::new(token_lifetime).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let config = world
        .avsd_config_with_avs(&avs, renew_before)
        .replace("[avs]\n", &format!("[avs]\n{avs_extra}"));
    let (avsd, auth) = world.logged_in(&config).await;
    let dialog = dialog_proxy(&world).await;
    wait_connection(&dialog, "connected", &avsd).await;
    Connected {
        world,
        avs,
        avsd,
        auth,
        dialog,
    }
}

/// A directive of an interface avsd does not have: avsd answers each with
/// a System.ExceptionEncountered event, which makes traffic on demand.
fn unknown_directive(message_id: &str) -> serde_json::Value {
    json!({"directive": {"header": {"namespace": "Bogus", "name": "Thing",
        "messageId": message_id}, "payload": {}}})
}

fn event_names(stats: &serde_json::Value) -> Vec<String> {
    stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorized_to_connected_in_protocol_order() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let (avsd, _auth) = world
        .logged_in(&world.avsd_config_with_avs(&avs, 600))
        .await;
    let authorized_at = Instant::now();
    let dialog = dialog_proxy(&world).await;
    wait_connection(&dialog, "connected", &avsd).await;
    let took = authorized_at.elapsed();

    let stats = avs.wait("event=System.SynchronizeState").await;
    assert_eq!(stats["downchannels"], 1, "{stats:#}");
    let names = event_names(&stats);
    assert_eq!(
        names[..2],
        [
            "Alexa.Discovery.AddOrUpdateReport",
            "System.SynchronizeState"
        ],
        "{stats:#}"
    );
    assert_eq!(
        stats["connections"]["total"], 1,
        "one connection: {stats:#}"
    );
    assert!(
        stats["rejections"].as_array().unwrap().is_empty(),
        "{stats:#}"
    );
    // How fast is for scripts/bench (exec to connected) to say, not a test.
    eprintln!("authorized to connected in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_directives_reach_their_handlers_even_in_tiny_frames() {
    let c = connected(3600, 600, "").await;
    let auth = &c.auth;
    let avs = &c.avs;
    let avsd = &c.avsd;
    let dialog = &c.dialog;

    // An interface avsd does not implement: reported back to AVS.
    let unknown = json!({"directive": {"header": {"namespace": "Notifications", "name": "SetIndicator",
        "messageId": "m-1"}, "payload": {"token": "t"}}});
    avs.push("?split=tiny", unknown).await;
    let stats = avs.wait("event=System.ExceptionEncountered").await;
    assert!(event_names(&stats).contains(&"System.ExceptionEncountered".to_string()));

    // RevokeAuthorization: avsd forgets its tokens and leaves AVS.
    let revoke = json!({"directive": {"header": {"namespace": "System",
        "name": "RevokeAuthorization", "messageId": "m-2"}, "payload": {}}});
    avs.push("?split=tiny", revoke).await;
    wait_state(auth, "unregistered", avsd).await;
    wait_connection(dialog, "disconnected", avsd).await;
    assert_eq!(auth.token_expires_at().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_hands_over_to_a_new_connection() {
    let c = connected(3600, 600, "").await;
    let avs = &c.avs;
    let avsd = &c.avsd;
    let dialog = &c.dialog;
    avs.wait("event=System.SynchronizeState").await;

    avs.post("/goaway").await;
    let stats = avs
        .wait("connections=2&downchannels=2&event=System.SynchronizeState&count=2&current=1")
        .await;
    let peak = stats["connections"]["peak_active"].as_u64().unwrap();
    assert!(
        peak <= 2,
        "more than a handover's two connections: {stats:#}"
    );
    wait_connection(dialog, "connected", avsd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_after_a_minute_up_reconnects_at_once() {
    // Idle pings every 21 s: the third comes over a minute after connecting,
    // when avsd counts the link as stable.
    let c = connected(3600, 600, "ping_interval_secs = 21\n").await;
    let avs = &c.avs;
    for pings in 1..=3 {
        avs.wait(&format!("pings={pings}")).await;
    }
    avs.post("/goaway").await;
    let stats = avs.wait("connections=2&downchannels=2").await;
    assert!(
        stats["connections"]["peak_active"].as_u64().unwrap() <= 2,
        "{stats:#}"
    );
    wait_connection(&c.dialog, "connected", &c.avsd).await;
    // AVS asked for a new connection on a link that was fine: no back-off.
    let log = c.avsd.log_text();
    assert!(
        log.contains("AVS closed the connection (GOAWAY); reconnecting"),
        "{log}"
    );
    assert!(connect_retries(&log).is_empty(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_and_outage_reconnect_with_growing_intervals() {
    let c = connected(3600, 600, "").await;
    let avs = &c.avs;
    let avsd = &c.avsd;
    let dialog = &c.dialog;

    // The stand-in refuses connections for a while and drops the current one.
    avs.post("/refuse?secs=4").await;
    avs.post("/cut").await;
    wait_connection(dialog, "disconnected", avsd).await;
    // Reconnected by itself once the stand-in accepts again. Rarely, quick
    // draws make seven tries fail within the 4 s, and the next waits up to
    // 32 s (its ceiling), so this wait allows one delay past the outage.
    wait_connection_within(dialog, "connected", avsd, Duration::from_secs(4 + 32 + 15)).await;
    let stats = avs.wait("downchannels=2").await;
    assert_eq!(
        stats["connections"]["peak"], 1,
        "never two connections outside a handover: {stats:#}"
    );
    // Each failed try is logged with its attempt number; the delays grow
    // with the table's ceilings (250 ms, 1 s, 2 s, ... 64 s).
    let tries = connect_retries(&avsd.log_text());
    assert!(
        tries.len() >= 2,
        "expected retries in the log:\n{}",
        avsd.log_text()
    );
    let ceilings = [0.25, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
    for (i, (attempt, delay)) in tries.iter().enumerate() {
        assert_eq!(*attempt, i as u64 + 1, "{tries:?}");
        assert!(*delay <= ceilings[i.min(7)] + 0.01, "{tries:?}");
    }
}

/// (attempt, delay) of each "cannot connect to AVS" or "connection lost" line.
fn connect_retries(log: &str) -> Vec<(u64, f64)> {
    log.lines()
        .filter_map(|l| {
            if let Some(rest) = l.split("cannot connect to AVS (attempt ").nth(1) {
                let (attempt, rest) = rest.split_once(", next try in ")?;
                let delay = rest.split(" s)").next()?;
                return Some((attempt.parse().ok()?, delay.parse().ok()?));
            }
            let rest = l.split("); reconnecting in ").nth(1)?;
            let (delay, rest) = rest.split_once(" s (attempt ")?;
            let attempt = rest.split(')').next()?;
            Some((attempt.parse().ok()?, delay.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_renewed_once_then_connected() {
    // Short-lived tokens: the companion refreshes at LWA for each request,
    // as it would for a token that expired.
    let c = connected(20, 5, "").await;
    let world = &c.world;
    let avs = &c.avs;
    let avsd = &c.avsd;
    let auth = &c.auth;
    let dialog = &c.dialog;
    let before = auth.token_expires_at().await.unwrap();
    let refreshes = world.sim.counter("refresh_grants").await;

    // The next request (the downchannel of the next connection) gets 403.
    avs.post("/status?code=403&count=1&on=downchannel").await;
    avs.post("/cut").await;
    let stats = avs.wait("downchannels=2").await;
    wait_connection(dialog, "connected", avsd).await;
    let rejected = stats["rejections"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{stats:#}");
    assert_eq!(rejected[0]["status"], 403);
    // Expiry is in whole seconds: a renewal within the same second keeps it.
    assert!(auth.token_expires_at().await.unwrap() >= before);
    // Renewed through the companion (at least once; a scheduled renewal
    // may fall into the same seconds).
    assert!(world.sim.counter("refresh_grants").await > refreshes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_pinged() {
    let c = connected(3600, 600, "ping_interval_secs = 1\n").await;
    let avs = &c.avs;
    // Traffic keeps a connection alive: while a new stream opens every
    // 250 ms (the ExceptionEncountered each unknown directive earns), no ping.
    for i in 0..8 {
        let unknown = unknown_directive(&format!("busy-{i}"));
        avs.push("", unknown).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = avs.wait("event=System.ExceptionEncountered&count=8").await;
    assert_eq!(stats["pings"], 0, "no ping while streams open: {stats:#}");
    // Idle: pinged once a second.
    let stats = avs.wait("pings=2").await;
    assert_eq!(stats["connections"]["total"], 1, "{stats:#}");

    // A ping answered with an error means the connection is gone.
    avs.post("/status?code=503&count=1&on=ping").await;
    let stats = avs.wait("connections=2&downchannels=2").await;
    assert_eq!(stats["connections"]["peak"], 1, "{stats:#}");
}

/// The `inactiveTimeInSeconds` of every UserInactivityReport, in order.
fn inactivity_reports(stats: &serde_json::Value) -> Vec<u64> {
    stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "System.UserInactivityReport")
        .map(|e| {
            e["inactive_seconds"]
                .as_u64()
                .expect("the report's seconds")
        })
        .collect()
}

/// Waits until two more reports than now have come, so the last one was
/// timed after whatever happened before this call; returns them all.
async fn two_more_reports(avs: &AvsSim) -> Vec<u64> {
    let seen = inactivity_reports(&avs.stats().await).len();
    let stats = avs
        .wait(&format!(
            "event=System.UserInactivityReport&count={}",
            seen + 2
        ))
        .await;
    inactivity_reports(&stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactivity_is_reported_and_a_user_or_amazon_resets_it() {
    // Reports every 2 s instead of every hour.
    let c = connected(3600, 600, "inactivity_report_secs = 2\n").await;
    let reports = two_more_reports(&c.avs).await;
    assert!(
        reports.windows(2).all(|w| w[1] > w[0]),
        "nobody did anything, so the time grows: {reports:?}"
    );

    // A Stop over D-Bus is the user at the device. Without the restart, the
    // time would also count the seconds before the Stop.
    let stop = Instant::now();
    c.dialog.stop().await.unwrap();
    let reports = two_more_reports(&c.avs).await;
    let since_stop = stop.elapsed().as_secs();
    assert!(
        *reports.last().unwrap() <= since_stop,
        "the clock restarts at Stop ({since_stop} s ago): {reports:?}\n{}",
        c.avsd.log_text()
    );

    // ResetUserInactivity: the user did something elsewhere (Alexa app).
    let push = Instant::now();
    let reset = json!({"directive": {"header": {"namespace": "System",
        "name": "ResetUserInactivity", "messageId": "reset-1"}, "payload": {}}});
    c.avs.push("", reset).await;
    let reports = two_more_reports(&c.avs).await;
    let since_push = push.elapsed().as_secs();
    assert!(
        *reports.last().unwrap() <= since_push,
        "the clock restarts at the directive ({since_push} s ago): {reports:?}"
    );
    // Amazon's System docs: a report only after a whole interval without
    // activity, never one that says less.
    assert!(reports.iter().all(|&r| r >= 2), "{reports:?}");
    assert_eq!(c.avs.stats().await["connections"]["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_endpoint_moves_to_the_new_endpoint() {
    let world = World::new(3600).await;
    let first = AvsSim::start(&world.env, &[]).await;
    let second = AvsSim::start(&world.env, &[]).await;
    let (avsd, _auth) = world
        .logged_in(&world.avsd_config_with_avs(&first, 600))
        .await;
    let dialog = dialog_proxy(&world).await;
    wait_connection(&dialog, "connected", &avsd).await;

    // Every Connection value from here on, as announced.
    let mut changes = dialog.receive_connection_changed().await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Some(change) = futures_util::StreamExt::next(&mut changes).await {
            if let Ok(v) = change.get().await {
                sink.lock().unwrap().push(v);
            }
        }
    });

    let set = json!({"directive": {"header": {"namespace": "System", "name": "SetEndpoint",
        "messageId": "m-3"}, "payload": {"endpoint": second.base.clone()}}});
    first.push("", set).await;
    second.wait("event=System.SynchronizeState").await;
    wait_connection(&dialog, "connected", &avsd).await;
    // Switching endpoints is reconnecting, not being disconnected.
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.contains(&"disconnected".to_string()), "{seen:?}");
    let stats = first.wait("current=0").await;
    assert_eq!(stats["connections"]["total"], 1, "{stats:#}");
    assert!(
        avsd.log_text()
            .contains(&format!("AVS asked to use endpoint {}", second.base)),
        "{}",
        avsd.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_one_at_a_time_within_the_stream_limit() {
    let c = connected(3600, 600, "").await;
    let avs = &c.avs;
    // Every answer takes 200 ms; twelve events are due at once.
    avs.post("/delay?ms=200&on=events").await;
    for i in 0..12 {
        let unknown = unknown_directive(&format!("burst-{i}"));
        avs.push("", unknown).await;
    }
    let stats = avs.wait("event=System.ExceptionEncountered&count=12").await;
    // The downchannel, the event being answered, and the next one, opened
    // once that answer began: never 8 events in flight, let alone 10 streams.
    let peak = stats["peak_requests"].as_u64().unwrap();
    assert!(
        peak <= 3,
        "one event at a time: {peak} requests at once; {stats:#}"
    );
    assert_eq!(stats["connections"]["total"], 1, "{stats:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_answered_503_hold_back_the_next_ones_longer_each_time() {
    let c = connected(3600, 600, "").await;
    let avs = &c.avs;
    avs.post("/status?code=503&count=3&on=events").await;
    for i in 0..4 {
        let unknown = unknown_directive(&format!("refused-{i}"));
        avs.push("", unknown).await;
    }
    let stats = avs
        .wait("event=System.ExceptionEncountered&rejections=3")
        .await;
    let log = c.avsd.log_text();
    let ceilings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("holding back events"))
        .filter_map(|l| l.split("(ceiling ").nth(1))
        .map(|rest| rest.trim_end_matches(')'))
        .collect();
    assert_eq!(ceilings, ["250 ms", "1000 ms", "2000 ms"], "{log}");
    assert_eq!(
        stats["connections"]["total"], 1,
        "the connection stays: {stats:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_token_is_used_without_dropping_the_downchannel() {
    // Tokens live 6 s and are renewed 3 s ahead: one renewal moves the
    // expiry about 3 s forward.
    let c = connected(6, 3, "").await;
    let first = c.auth.token_expires_at().await.unwrap();
    let mut changes = c.auth.receive_token_expires_at_changed().await;
    let renewed = tokio::time::timeout(support::companion::WAIT, async {
        loop {
            let now = c.auth.token_expires_at().await.unwrap();
            if now > first + 2 {
                return now;
            }
            futures_util::StreamExt::next(&mut changes).await;
        }
    })
    .await
    .expect("the token was renewed");
    assert!(renewed > first);
    // An event after the renewals is accepted on the same connection, with
    // the same downchannel: the new token simply goes on the next request.
    c.avs.push("", unknown_directive("after-renewal")).await;
    let stats = c.avs.wait("event=System.ExceptionEncountered").await;
    assert_eq!(stats["connections"]["total"], 1, "{stats:#}");
    assert_eq!(stats["downchannels"], 1, "{stats:#}");
    assert!(
        stats["rejections"].as_array().unwrap().is_empty(),
        "{stats:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_downchannel_body_is_reported_and_the_connection_stays() {
    let c = connected(3600, 600, "").await;
    let avs = &c.avs;
    // Bytes that are no part at all, right after a delimiter.
    avs.push("?raw=true", json!("this is not a multipart part"))
        .await;
    let stats = avs.wait("event=System.ExceptionEncountered").await;
    let report = stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "System.ExceptionEncountered")
        .unwrap();
    assert_eq!(report["connection"], 1, "{stats:#}");
    // The downchannel was reopened on the same connection and works.
    let unknown = unknown_directive("after-the-break");
    avs.push("", unknown).await;
    let stats = avs
        .wait("event=System.ExceptionEncountered&count=2&downchannels=2")
        .await;
    assert_eq!(stats["connections"]["total"], 1, "{stats:#}");
    assert!(c.avsd.log_text().contains("malformed"), "logged");
}

//! Alerts as an alarm clock (issue 17), end to end: the real avsd, the AVS
//! stand-in pushing SetAlert on the downchannel, and the tone heard in a
//! FIFO-backed ALSA speaker. A timer rings on time; an alert survives
//! kill -9; it rings with AVS gone, D-Bus Stop silences it, and AVS hears
//! AlertStarted and AlertStopped once each after it is back; after a
//! restart a 5-minute-late alert rings and a 45-minute-late one does not
//! (avsd's clock shifted with libfaketime); bad SetAlerts fail cleanly.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use avsctl::proxy::AlertsProxy;
use serde_json::{Value, json};
use support::audio::s16le;
use support::dialog::{Mic, Rig, SPEAKER_10MS, Speaker, speech16};
use support::faults::{Cut, Proxy};
use support::system::{AvsSim, World, wait_connection};
use support::{Daemon, Notify};

const AUDIO: &str = "playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";
/// Bytes of the speaker FIFO per millisecond (48 kHz stereo i16).
const BYTES_PER_MS: usize = SPEAKER_10MS / 10;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// ISO 8601 of Unix milliseconds (whole seconds), as AVS writes it.
fn iso(ms: i64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", ms / 1000),
            "+%Y-%m-%dT%H:%M:%S+0000",
        ])
        .output()
        .expect("date runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A whole second at least `ahead_ms` from now (AVS's times are whole
/// seconds).
fn due_in(ahead_ms: i64) -> i64 {
    (now_ms() + ahead_ms + 999) / 1000 * 1000
}

fn directive(name: &str, payload: Value) -> Value {
    json!({"directive": {
        "header": {"namespace": "Alerts", "name": name,
                   "messageId": format!("m-{name}-{}", now_ms())},
        "payload": payload,
    }})
}

fn set_alert(token: &str, kind: &str, due_ms: i64, loops: Option<u32>) -> Value {
    let mut p = json!({"token": token, "type": kind, "scheduledTime": iso(due_ms),
                       "assets": [], "assetPlayOrder": []});
    if let Some(n) = loops {
        p["loopCount"] = json!(n);
        p["loopPauseInMilliSeconds"] = json!(0);
    }
    directive("SetAlert", p)
}

/// The Alerts events the stand-in accepted, as (name, token).
fn alert_events(stats: &Value) -> Vec<(String, String)> {
    stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap_or("").starts_with("Alerts."))
        .filter(|e| (200..300).contains(&e["status"].as_u64().unwrap_or(0)))
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["payload"]["token"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Alerts events the stand-in refused (it answers what AVS would).
fn refused(stats: &Value) -> Vec<String> {
    stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap_or("").starts_with("Alerts."))
        .filter(|e| e["status"].as_u64().unwrap_or(0) >= 300)
        .map(|e| e.to_string())
        .collect()
}

/// A rig whose clock is known to be synchronized (the file the config
/// names exists), with the speaker FIFO drained.
struct Alarm {
    rig: Rig,
    speaker: Speaker,
    alerts: AlertsProxy<'static>,
    _sync: tempfile::TempDir,
}

async fn alarm_rig(route: Option<&Proxy>) -> Alarm {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    alarm_rig_on(world, avs, route).await
}

async fn alarm_rig_on(world: World, avs: AvsSim, route: Option<&Proxy>) -> Alarm {
    alarm_rig_with(world, avs, route, AUDIO).await
}

async fn alarm_rig_with(world: World, avs: AvsSim, route: Option<&Proxy>, audio: &str) -> Alarm {
    let a = alarm_rig_synced(world, avs, route, audio, false).await;
    std::fs::write(a.sync_flag(), b"").unwrap();
    a
}

/// The rig, its clock-synchronized flag file made only if `synced`.
async fn alarm_rig_synced(
    world: World,
    avs: AvsSim,
    route: Option<&Proxy>,
    audio: &str,
    synced: bool,
) -> Alarm {
    let sync = tempfile::tempdir().unwrap();
    let flag = sync.path().join("synchronized");
    if synced {
        std::fs::write(&flag, b"").unwrap();
    }
    let direct = format!("endpoint = \"{}\"\n", avs.base);
    let routed = route.map(|p| format!("endpoint = \"{}\"\n", p.base()));
    let rig = Rig::start_on(
        world,
        avs,
        |c| {
            let c = match &routed {
                Some(r) => c.replace(&direct, r),
                None => c,
            };
            format!("{c}[alerts]\nclock_sync_file = \"{}\"\n", flag.display())
        },
        audio,
    )
    .await;
    let speaker = Speaker::new(&rig.path("spk.fifo"), SPEAKER_10MS);
    let alerts = AlertsProxy::new(&rig.world.bus.connect().await)
        .await
        .unwrap();
    Alarm {
        rig,
        speaker,
        alerts,
        _sync: sync,
    }
}

impl Alarm {
    /// The Alerts interface of `_avsd` (a restarted daemon: a new
    /// connection, so no property cached from the old one).
    async fn alerts_of(&self, _avsd: &Daemon) -> AlertsProxy<'static> {
        AlertsProxy::new(&self.rig.world.bus.connect().await)
            .await
            .unwrap()
    }

    /// The file whose presence tells avsd the clock is synchronized.
    fn sync_flag(&self) -> PathBuf {
        self._sync.path().join("synchronized")
    }

    /// Bytes the speaker has played since the first sound.
    fn sound_so_far(&self) -> usize {
        let played = self.speaker.played();
        played
            .iter()
            .position(|b| *b != 0)
            .map_or(0, |first| played.len() - first)
    }

    /// The state directory and the ALSA config of the running avsd.
    fn restart_parts(&self) -> (PathBuf, String, String) {
        let dir = self.rig.avsd.config.parent().unwrap().to_path_buf();
        let config = std::fs::read_to_string(&self.rig.avsd.config).unwrap();
        let alsa = self.rig.path("asound.conf").display().to_string();
        (dir.join("state"), config, alsa)
    }
}

/// Start avsd again on the same state, with `env` added.
fn restart(a: &Alarm, env: &[(&str, &str)]) -> Daemon {
    let (state, config, alsa) = a.restart_parts();
    let mut all = vec![("ALSA_CONFIG_PATH", alsa.as_str())];
    all.extend_from_slice(env);
    let notify = Notify::bind();
    let avsd = Daemon::start_in(&a.rig.world.bus, Some(&notify), &config, Some(&state), &all);
    notify.wait_for("READY=1", Duration::from_secs(20));
    avsd
}

/// Wait until avsd's `Alerts.Active` is `want`.
async fn wait_active(alerts: &AlertsProxy<'_>, want: &str) {
    use futures_util::StreamExt;
    let mut changes = alerts.receive_active_changed().await;
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if alerts.active().await.unwrap() == want {
                return;
            }
            changes.next().await;
        }
    })
    .await;
    assert!(found.is_ok(), "Alerts.Active never became {want:?}");
}

/// Wait until avsd's `Dialog.Connection` is no longer `connected`.
async fn wait_not_connected(a: &Alarm) {
    use futures_util::StreamExt;
    let mut changes = a.rig.dialog.receive_connection_changed().await;
    let gone = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let now = support::system::fresh(a.rig.dialog.inner(), "Connection").await;
            if now != "connected" {
                return;
            }
            changes.next().await;
        }
    })
    .await;
    assert!(gone.is_ok(), "avsd never noticed AVS was gone");
}

/// Silence within 200 ms of `stopped_at` (bytes of sound played when the
/// stop returned): what the speaker played from 200 ms after it is zero.
async fn assert_silent_after(a: &Alarm, stopped_at: usize) {
    let window = 200 * BYTES_PER_MS;
    a.speaker
        .wait_sound(stopped_at + window + 300 * BYTES_PER_MS)
        .await;
    let played = a.speaker.played();
    let first = played.iter().position(|b| *b != 0).unwrap();
    let after = &played[first + stopped_at + window..];
    let loud = after.iter().filter(|b| **b != 0).count();
    assert_eq!(loud, 0, "sound went on more than 200 ms after Stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_rings_on_time_and_avs_hears_it_start_and_stop() {
    let a = alarm_rig(None).await;
    let due = due_in(3000);
    a.rig
        .avs
        .push("", set_alert("timer-1", "TIMER", due, Some(2)))
        .await;
    a.rig.avs.wait("event=Alerts.SetAlertSucceeded").await;
    let listed = a.alerts.alerts().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].0.as_str(), listed[0].1.as_str(), listed[0].2),
        ("timer-1", "TIMER", due / 1000)
    );
    a.speaker.wait_sound(1).await;
    let heard = now_ms();
    assert!(
        (heard - due).abs() <= 250,
        "the tone started {} ms from its time",
        heard - due
    );
    // Two loops of the timer's pattern, then it ends by itself.
    let stats = a.rig.avs.wait("event=Alerts.AlertStopped").await;
    assert_eq!(
        alert_events(&stats),
        [
            ("Alerts.SetAlertSucceeded".into(), "timer-1".into()),
            ("Alerts.AlertStarted".into(), "timer-1".into()),
            ("Alerts.AlertStopped".into(), "timer-1".into()),
        ]
    );
    assert!(refused(&stats).is_empty(), "{:?}", refused(&stats));
    wait_active(&a.alerts, "").await;
    assert!(
        a.alerts.alerts().await.unwrap().is_empty(),
        "rung once, gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_set_before_kill_9_rings_after_the_restart() {
    let mut a = alarm_rig(None).await;
    let due = due_in(6000);
    a.rig
        .avs
        .push("", set_alert("alarm-1", "ALARM", due, Some(1)))
        .await;
    a.rig.avs.wait("event=Alerts.SetAlertSucceeded").await;
    // Gone from avsd's outbox too: a kill in the few milliseconds between
    // AVS's answer and that write would send it again.
    a.rig
        .avsd
        .wait_log(
            "sent Alerts.SetAlertSucceeded to AVS",
            1,
            Duration::from_secs(30),
        )
        .await;
    a.rig.avsd.signal("KILL");
    a.rig.avsd.wait_exit(Duration::from_secs(10));
    assert!(
        now_ms() < due,
        "the restart must come before the alert's time"
    );
    let avsd = restart(&a, &[]);
    a.speaker.wait_sound(1).await;
    let stats = a.rig.avs.wait("event=Alerts.AlertStopped").await;
    assert_eq!(
        alert_events(&stats),
        [
            ("Alerts.SetAlertSucceeded".into(), "alarm-1".into()),
            ("Alerts.AlertStarted".into(), "alarm-1".into()),
            ("Alerts.AlertStopped".into(), "alarm-1".into()),
        ]
    );
    assert!(refused(&stats).is_empty(), "{:?}", refused(&stats));
    drop(avsd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_avs_gone_it_rings_stop_silences_it_and_avs_hears_both_events_once() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let proxy = Proxy::start(&avs.base).await;
    let a = alarm_rig_on(world, avs, Some(&proxy)).await;
    let due = due_in(4000);
    a.rig
        .avs
        .push("", set_alert("alarm-off", "ALARM", due, None))
        .await;
    a.rig.avs.wait("event=Alerts.SetAlertSucceeded").await;
    // AVS goes away.
    proxy.refuse(true);
    proxy.cut_all(Cut::Reset);
    wait_not_connected(&a).await;
    a.speaker.wait_sound(1).await;
    wait_active(&a.alerts, "alarm-off").await;
    // Ringing for a moment, then the user stops it with no network.
    a.speaker.wait_sound(500 * BYTES_PER_MS).await;
    assert!(a.alerts.stop().await.unwrap(), "an alert was ringing");
    let stopped_at = a.sound_so_far();
    assert_silent_after(&a, stopped_at).await;
    wait_active(&a.alerts, "").await;
    let before = alert_events(&a.rig.avs.stats().await);
    assert_eq!(
        before,
        [("Alerts.SetAlertSucceeded".into(), "alarm-off".into())],
        "nothing reached AVS while it was away"
    );
    // AVS is back: both events, once each, in order.
    proxy.refuse(false);
    let stats = a.rig.avs.wait("event=Alerts.AlertStopped").await;
    wait_connection(&a.rig.dialog, "connected", &a.rig.avsd).await;
    assert_eq!(
        alert_events(&stats),
        [
            ("Alerts.SetAlertSucceeded".into(), "alarm-off".into()),
            ("Alerts.AlertStarted".into(), "alarm-off".into()),
            ("Alerts.AlertStopped".into(), "alarm-off".into()),
        ]
    );
    assert!(refused(&stats).is_empty(), "{:?}", refused(&stats));
    assert!(
        !Path::new(&a.restart_parts().0.join("alerts/outbox.json")).exists()
            || std::fs::read_to_string(a.restart_parts().0.join("alerts/outbox.json")).unwrap()
                == "[]",
        "the outbox is empty once AVS has everything"
    );
}

/// Debian's libfaketime, whatever the architecture's library directory.
fn libfaketime() -> String {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
        .expect("libfaketime is missing: run scripts/test-audio-deps (apt-get install libfaketime)")
}

/// Set an alert due in a few seconds, kill avsd before it rings, wait
/// until its time has passed, and start avsd again with its clock
/// `shift` (libfaketime's offset, e.g. "+300") ahead.
async fn late_by(shift: &str, token: &str) -> (Alarm, Daemon) {
    let mut a = alarm_rig(None).await;
    let due = due_in(3000);
    a.rig
        .avs
        .push("", set_alert(token, "ALARM", due, Some(1)))
        .await;
    a.rig.avs.wait("event=Alerts.SetAlertSucceeded").await;
    // Gone from avsd's outbox too: a kill in the few milliseconds between
    // AVS's answer and that write would send it again.
    a.rig
        .avsd
        .wait_log(
            "sent Alerts.SetAlertSucceeded to AVS",
            1,
            Duration::from_secs(30),
        )
        .await;
    a.rig.avsd.signal("KILL");
    a.rig.avsd.wait_exit(Duration::from_secs(10));
    assert!(now_ms() < due, "killed before the alert's time");
    // The stand-in's clock must see the alert's time pass too, as AVS's
    // would have during the outage.
    while now_ms() <= due {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lib = libfaketime();
    let avsd = restart(
        &a,
        &[
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME", shift),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    (a, avsd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_minutes_late_after_a_restart_it_rings_at_once() {
    let (a, avsd) = late_by("+300", "late-5").await;
    a.speaker.wait_sound(1).await;
    let stats = a.rig.avs.wait("event=Alerts.AlertStopped").await;
    assert_eq!(
        alert_events(&stats),
        [
            ("Alerts.SetAlertSucceeded".into(), "late-5".into()),
            ("Alerts.AlertStarted".into(), "late-5".into()),
            ("Alerts.AlertStopped".into(), "late-5".into()),
        ]
    );
    drop(avsd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_five_minutes_late_after_a_restart_it_is_dropped_unrung() {
    let (a, avsd) = late_by("+2700", "late-45").await;
    let stats = a.rig.avs.wait("event=Alerts.AlertStopped").await;
    assert_eq!(
        alert_events(&stats),
        [
            ("Alerts.SetAlertSucceeded".into(), "late-45".into()),
            ("Alerts.AlertStopped".into(), "late-45".into()),
        ],
        "reported stopped, never started"
    );
    assert!(refused(&stats).is_empty(), "{:?}", refused(&stats));
    assert_eq!(a.sound_so_far(), 0, "it never rang");
    let alerts = AlertsProxy::new(&a.rig.world.bus.connect().await)
        .await
        .unwrap();
    assert!(alerts.alerts().await.unwrap().is_empty());
    drop(avsd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_set_alerts_fail_and_change_nothing() {
    let a = alarm_rig(None).await;
    let later = due_in(3_600_000);
    a.rig
        .avs
        .push("", set_alert("keep", "ALARM", later, None))
        .await;
    a.rig.avs.wait("event=Alerts.SetAlertSucceeded").await;
    let before = a.alerts.alerts().await.unwrap();
    let bad_time = directive(
        "SetAlert",
        json!({"token": "bad-time", "type": "TIMER", "scheduledTime": "tomorrow at noon"}),
    );
    let bad_type = directive(
        "SetAlert",
        json!({"token": "bad-type", "type": "NAP", "scheduledTime": iso(later)}),
    );
    let no_token = directive(
        "SetAlert",
        json!({"type": "TIMER", "scheduledTime": iso(later)}),
    );
    for d in [bad_time, bad_type] {
        a.rig.avs.push("", d).await;
    }
    a.rig.avs.wait("event=Alerts.SetAlertFailed&count=2").await;
    a.rig.avs.push("", no_token).await;
    a.rig.avs.wait("event=System.ExceptionEncountered").await;
    // Up to the declared maximum of timers, then one more.
    for i in 0..100 {
        a.rig
            .avs
            .push("", set_alert(&format!("t{i}"), "TIMER", later + i, None))
            .await;
    }
    a.rig
        .avs
        .wait("event=Alerts.SetAlertSucceeded&count=101")
        .await;
    a.rig
        .avs
        .push("", set_alert("one-too-many", "TIMER", later, None))
        .await;
    let stats = a.rig.avs.wait("event=Alerts.SetAlertFailed&count=3").await;
    let failed: Vec<String> = alert_events(&stats)
        .into_iter()
        .filter(|(n, _)| n == "Alerts.SetAlertFailed")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(failed, ["bad-time", "bad-type", "one-too-many"]);
    assert!(refused(&stats).is_empty(), "{:?}", refused(&stats));
    let after = a.alerts.alerts().await.unwrap();
    assert_eq!(after.len(), 101);
    assert!(after.contains(&before[0]));
    assert!(!after.iter().any(|x| x.0 == "one-too-many"));
    assert_eq!(a.sound_so_far(), 0, "nothing rang");
}

/// The amplitude (0 to 1) of `freq` Hz in `x` (48 kHz), by Goertzel.
fn tone_level(x: &[f32], freq: f32) -> f32 {
    let w = std::f32::consts::TAU * freq / 48_000.0;
    let (mut s1, mut s2) = (0f32, 0f32);
    for v in x {
        let s0 = v + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    2.0 * power.max(0.0).sqrt() / x.len() as f32
}

/// How loud the alarm's two tones are in `x`: the median over its 20 ms
/// windows (the pattern beeps two thirds of the time; a median is not
/// fooled by a moment of speech near those frequencies).
fn alarm_level(x: &[f32]) -> f32 {
    let mut levels: Vec<f32> = x
        .chunks_exact(960)
        .map(|w| tone_level(w, 880.0).max(tone_level(w, 1320.0)))
        .collect();
    assert!(!levels.is_empty(), "no audio to measure");
    levels.sort_by(f32::total_cmp);
    levels[levels.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alexa_speaking_during_an_alarm_ducks_it_and_it_comes_back() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let audio = format!("capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n{AUDIO}");
    let a = alarm_rig_with(world, avs, None, &audio).await;
    let mic = Mic::new(&a.rig.path("mic.fifo"), 320);
    a.rig
        .avs
        .post("/dialog?end_of_speech_ms=500&stop_capture_ms=10000")
        .await;
    let question = speech16(a.rig.dir.path(), "q", "what is the weather like");
    let due = due_in(2000);
    a.rig
        .avs
        .push("", set_alert("wake-up", "ALARM", due, None))
        .await;
    a.speaker.wait_sound(1).await;
    let t0 = std::time::Instant::now();
    // A full loop of the pattern at full level first.
    a.speaker.wait_sound(1600 * BYTES_PER_MS).await;
    a.rig.dialog.tap().await.expect("Tap");
    let _said = mic.say(question);
    a.rig.avs.wait("event=Alerts.AlertEnteredBackground").await;
    let ducked_from = t0.elapsed();
    a.rig
        .avs
        .wait("event=SpeechSynthesizer.SpeechFinished")
        .await;
    let stats = a.rig.avs.wait("event=Alerts.AlertEnteredForeground").await;
    let back_at = t0.elapsed();
    // Another full loop back in the foreground, then the user's Stop.
    let now_sound = a.sound_so_far();
    a.speaker.wait_sound(now_sound + 1600 * BYTES_PER_MS).await;
    a.rig.dialog.stop().await.expect("Dialog.Stop");
    let stopped_at = a.sound_so_far();
    assert_silent_after(&a, stopped_at).await;
    let stats_after = a.rig.avs.wait("event=Alerts.AlertStopped").await;
    assert!(
        refused(&stats_after).is_empty(),
        "{:?}",
        refused(&stats_after)
    );
    let names: Vec<String> = alert_events(&stats).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "Alerts.SetAlertSucceeded",
            "Alerts.AlertStarted",
            "Alerts.AlertEnteredBackground",
            "Alerts.AlertEnteredForeground",
        ]
    );

    // The mix, left channel, from the first sound: full, ducked while
    // Alexa speaks (the events' times, 200 ms in from each edge), full.
    let played = a.speaker.played();
    let first = played.iter().position(|b| *b != 0).unwrap();
    let left: Vec<f32> = s16le(&played[first - first % 4..])
        .chunks_exact(2)
        .map(|f| f[0])
        .collect();
    let at = |d: Duration| (d.as_millis() as usize * 48).min(left.len());
    let before = alarm_level(&left[..at(Duration::from_millis(1500))]);
    let ducked = alarm_level(
        &left[at(ducked_from + Duration::from_millis(300))
            ..at(back_at - Duration::from_millis(300))],
    );
    let after = alarm_level(
        &left[at(back_at + Duration::from_millis(300))..at(back_at + Duration::from_millis(1500))],
    );
    println!("alarm tone level: before {before:.3}, under Alexa {ducked:.3}, after {after:.3}");
    assert!(before > 0.3, "the alarm rang loud ({before:.3})");
    assert!(
        ducked < before * 0.25 && ducked > before * 0.02,
        "attenuated, still heard, under Alexa's voice ({ducked:.3} of {before:.3})"
    );
    assert!(
        after > before * 0.8,
        "full again after ({after:.3} of {before:.3})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_rings_before_the_clock_is_synchronized() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let a = alarm_rig_synced(world, avs, None, AUDIO, false).await;
    let due = due_in(2000);
    a.rig
        .avs
        .push("", set_alert("early", "TIMER", due, Some(1)))
        .await;
    a.rig.avs.wait("event=Alerts.SetAlertSucceeded").await;
    a.rig
        .avsd
        .wait_log("alerts wait for the clock", 1, Duration::from_secs(30))
        .await;
    // Its time passes with the clock unconfirmed: silence.
    while now_ms() < due + 1500 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        a.sound_so_far(),
        0,
        "rang before the clock was synchronized"
    );
    assert_eq!(a.alerts.active().await.unwrap(), "");
    // NTP has set the clock: it rings now, 1.5 s late.
    let synced_at = now_ms();
    std::fs::write(a.sync_flag(), b"").unwrap();
    a.speaker.wait_sound(1).await;
    assert!(now_ms() >= synced_at);
    let stats = a.rig.avs.wait("event=Alerts.AlertStopped").await;
    assert!(refused(&stats).is_empty(), "{:?}", refused(&stats));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_volume_directives_are_answered() {
    let a = alarm_rig(None).await;
    let later = due_in(3_600_000);
    for t in ["d1", "d2", "d3"] {
        a.rig
            .avs
            .push("", set_alert(t, "REMINDER", later, None))
            .await;
    }
    a.rig
        .avs
        .wait("event=Alerts.SetAlertSucceeded&count=3")
        .await;
    a.rig
        .avs
        .push("", directive("DeleteAlert", json!({"token": "d1"})))
        .await;
    a.rig.avs.wait("event=Alerts.DeleteAlertSucceeded").await;
    a.rig
        .avs
        .push(
            "",
            directive("DeleteAlerts", json!({"tokens": ["d2", "d3"]})),
        )
        .await;
    a.rig.avs.wait("event=Alerts.DeleteAlertsSucceeded").await;
    assert!(a.alerts.alerts().await.unwrap().is_empty());
    a.rig
        .avs
        .push("", directive("SetVolume", json!({"volume": 30})))
        .await;
    a.rig
        .avs
        .push("", directive("AdjustVolume", json!({"volume": -50})))
        .await;
    let stats = a.rig.avs.wait("event=Alerts.VolumeChanged&count=2").await;
    let volumes: Vec<i64> = stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "Alerts.VolumeChanged")
        .map(|e| e["payload"]["volume"].as_i64().unwrap())
        .collect();
    assert_eq!(volumes, [30, 0], "set, then adjusted and clamped at 0");
    assert!(refused(&stats).is_empty(), "{:?}", refused(&stats));
}

/// The answer MP3 the stand-in serves as `chime.mp3`, decoded by sox to
/// 48 kHz mono.
fn chime_48k(dir: &Path) -> Vec<f32> {
    let out = dir.join("chime48.raw");
    let mp3 = support::repo().join("tests/fixtures/answer.mp3");
    let (mp3, out_s) = (mp3.display().to_string(), out.display().to_string());
    support::audio::tool(
        "sox",
        &[
            &mp3,
            "-r",
            "48000",
            "-c",
            "1",
            "-e",
            "signed-integer",
            "-b",
            "16",
            "-L",
            "-t",
            "raw",
            &out_s,
        ],
    );
    s16le(&std::fs::read(out).unwrap())
}

fn reminder(token: &str, due: i64, url: &str) -> Value {
    directive(
        "SetAlert",
        json!({"token": token, "type": "REMINDER", "scheduledTime": iso(due), "label": "bins out",
               "assets": [{"assetId": "chime", "url": url}], "assetPlayOrder": ["chime"],
               "loopCount": 1, "loopPauseInMilliSeconds": 0}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_rings_its_own_sound_fetched_when_set_or_the_tone_without_it() {
    let a = alarm_rig(None).await;
    let chime = format!("{}/alerts/assets/chime.mp3", a.rig.avs.base);
    let due = due_in(4000);
    a.rig
        .avs
        .push("", reminder("with-sound", due, &chime))
        .await;
    a.rig
        .avsd
        .wait_log("sound chime kept", 1, Duration::from_secs(30))
        .await;
    let listed = a.alerts.alerts().await.unwrap();
    assert_eq!(listed[0].3, "bins out", "the label is on D-Bus");
    a.speaker.wait_sound(1).await;
    a.rig.avs.wait("event=Alerts.AlertStopped").await;
    // What played is the chime: the same sound as the MP3, decoded here.
    let played = a.speaker.played();
    let first = played.iter().position(|b| *b != 0).unwrap();
    let left: Vec<f32> = s16le(&played[first - first % 4..])
        .chunks_exact(2)
        .map(|f| f[0])
        .collect();
    let reference = chime_48k(a.rig.dir.path());
    // Both from where the sound starts (the MP3 begins with its encoder's
    // silence), a second of each.
    let (of, _) = support::audio::active_span(&left, 0.02).expect("sound played");
    let (rf, _) = support::audio::active_span(&reference, 0.02).expect("sound in the MP3");
    let n = (reference.len() - rf).min(left.len() - of).min(48_000);
    let a16 = support::audio::decimate(&left[of..of + n], 3);
    let b16 = support::audio::decimate(&reference[rf..rf + n], 3);
    let (corr, _) = support::audio::best_correlation(&a16, &b16, 400);
    assert!(corr > 0.8, "the reminder played its own sound ({corr:.3})");

    // A sound that cannot be fetched: it rings the built-in tone.
    let sound_before = a.sound_so_far();
    let due = due_in(3000);
    a.rig
        .avs
        .push(
            "",
            reminder("no-sound", due, "https://127.0.0.1:9/chime.mp3"),
        )
        .await;
    a.rig
        .avsd
        .wait_log("cannot fetch sound chime", 1, Duration::from_secs(30))
        .await;
    a.speaker
        .wait_sound(sound_before + 1000 * BYTES_PER_MS)
        .await;
    let stats = a.rig.avs.wait("event=Alerts.AlertStopped&count=2").await;
    assert!(refused(&stats).is_empty(), "{:?}", refused(&stats));
    let played = a.speaker.played();
    let tail: Vec<f32> = s16le(&played[played.len() - played.len() % 4 - 1_500 * BYTES_PER_MS..])
        .chunks_exact(2)
        .map(|f| f[0])
        .collect();
    let level = [1047.0, 1319.0, 1568.0]
        .iter()
        .map(|f| {
            tail.chunks_exact(960)
                .map(|w| tone_level(w, *f))
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max);
    assert!(level > 0.3, "the reminder's tone rang ({level:.3})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_ringing_it_rings_on_after_the_restart_and_avs_hears_one_start() {
    let mut a = alarm_rig(None).await;
    let due = due_in(2000);
    a.rig
        .avs
        .push("", set_alert("ringing", "ALARM", due, None))
        .await;
    a.speaker.wait_sound(1).await;
    a.rig.avs.wait("event=Alerts.AlertStarted").await;
    // Gone from the outbox too, or the kill lands in the window between
    // AVS's answer and that write and AlertStarted is rightly sent again.
    a.rig
        .avsd
        .wait_log(
            "sent Alerts.AlertStarted to AVS",
            1,
            Duration::from_secs(30),
        )
        .await;
    a.rig.avsd.signal("KILL");
    a.rig.avsd.wait_exit(Duration::from_secs(10));
    let avsd = restart(&a, &[]);
    avsd.wait_log("rings on after a restart", 1, Duration::from_secs(30))
        .await;
    wait_active(&a.alerts_of(&avsd).await, "ringing").await;
    let alerts = a.alerts_of(&avsd).await;
    assert!(alerts.stop().await.unwrap(), "it was ringing again");
    let stats = a.rig.avs.wait("event=Alerts.AlertStopped").await;
    assert_eq!(
        alert_events(&stats),
        [
            ("Alerts.SetAlertSucceeded".into(), "ringing".into()),
            ("Alerts.AlertStarted".into(), "ringing".into()),
            ("Alerts.AlertStopped".into(), "ringing".into()),
        ]
    );
    assert!(refused(&stats).is_empty(), "{:?}", refused(&stats));
}

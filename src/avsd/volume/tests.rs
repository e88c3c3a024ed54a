//! Unit tests of the volume's owner: clamping, what is marked for AVS,
//! what is saved and restored, and the gain it applies.

use super::*;
use crate::audio::mixer::MasterGain;

fn start(dir: &std::path::Path) -> (VolumeHandle, MasterGain, TaskTracker) {
    let gain = MasterGain::default();
    let tracker = TaskTracker::new();
    let handle = spawn(
        Settings {
            state_dir: dir.to_path_buf(),
            output: Output::Software(gain.clone()),
        },
        &tracker,
        CancellationToken::new(),
    );
    (handle, gain, tracker)
}

fn saved(dir: &std::path::Path) -> Volume {
    serde_json::from_slice(&std::fs::read(dir.join(VOLUME_FILE)).unwrap()).unwrap()
}

#[tokio::test]
async fn a_new_device_plays_at_full_volume() {
    let dir = tempfile::tempdir().unwrap();
    let (v, gain, _t) = start(dir.path());
    assert_eq!(*v.state().borrow(), Volume::default());
    assert_eq!(gain.get(), 1.0);
}

#[tokio::test]
async fn set_adjust_and_mute_are_applied_saved_and_marked_for_avs() {
    let dir = tempfile::tempdir().unwrap();
    let (v, gain, _t) = start(dir.path());
    let after = v.set(30, Source::Avs).await.unwrap();
    assert_eq!((after.volume, after.muted), (30, false));
    assert_ne!(after.unreported_volume, 0);
    assert_eq!(after.unreported_mute, 0);
    assert!((gain.get() - gain_for(30, false)).abs() < 1e-6);
    assert_eq!(saved(dir.path()), after);

    assert_eq!(v.adjust(200, Source::Avs).await.unwrap().volume, 100);
    assert_eq!(v.adjust(-150, Source::Local).await.unwrap().volume, 0);
    assert_eq!(v.adjust(i64::MIN, Source::Local).await.unwrap().volume, 0);
    assert_eq!(
        v.set(101, Source::Local).await,
        Err(VolumeError::OutOfRange(101))
    );
    assert_eq!(
        v.set(-1, Source::Local).await,
        Err(VolumeError::OutOfRange(-1))
    );

    let muted = v.set_muted(true, Source::Local).await.unwrap();
    assert!(muted.muted);
    assert_ne!(muted.unreported_mute, 0);
    assert_eq!(gain.get(), 0.0);
    // A volume change unmutes.
    let up = v.set(60, Source::Local).await.unwrap();
    assert!(!up.muted);
    assert!((gain.get() - gain_for(60, false)).abs() < 1e-6);
}

#[tokio::test]
async fn a_local_change_to_the_same_value_tells_avs_nothing_but_a_directive_does() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _gain, _t) = start(dir.path());
    let same = v.set(100, Source::Local).await.unwrap();
    assert_eq!(same.unreported_volume, 0);
    let acked = v.set(100, Source::Avs).await.unwrap();
    assert_ne!(acked.unreported_volume, 0);
}

#[tokio::test]
async fn reported_changes_are_cleared_but_newer_ones_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _gain, _t) = start(dir.path());
    let first = v.set(40, Source::Local).await.unwrap();
    let second = v.set(45, Source::Local).await.unwrap();
    // The event for the first change went out: the second still waits.
    v.reported(first.unreported_volume, 0).await.unwrap();
    assert_eq!(
        v.state().borrow().unreported_volume,
        second.unreported_volume
    );
    v.reported(second.unreported_volume, 0).await.unwrap();
    assert_eq!(v.state().borrow().unreported_volume, 0);
    assert_eq!(saved(dir.path()).unreported_volume, 0);
}

#[tokio::test]
async fn the_volume_and_what_avs_has_not_heard_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let (v, _gain, t) = start(dir.path());
        let after = v.set_muted(true, Source::Local).await.unwrap();
        let after = v.set(25, Source::Local).await.map(|_| after).unwrap();
        t.close();
        after
    };
    let (v, gain, _t) = start(dir.path());
    let now = *v.state().borrow();
    assert_eq!(now.volume, 25);
    assert!(!now.muted, "the volume change unmuted");
    assert_ne!(now.unreported_volume, 0);
    assert_eq!(now.unreported_mute, before.unreported_mute);
    assert!((gain.get() - gain_for(25, false)).abs() < 1e-6);
    // Numbering goes on from the saved marks, never reusing one.
    let next = v.set(26, Source::Local).await.unwrap();
    assert!(next.unreported_volume > now.unreported_volume.max(now.unreported_mute));
}

#[tokio::test]
async fn a_damaged_file_gives_the_default() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(VOLUME_FILE),
        b"{\"volume\": 300, \"muted\": false}",
    )
    .unwrap();
    let (v, _gain, _t) = start(dir.path());
    assert_eq!(*v.state().borrow(), Volume::default());
}

#[tokio::test]
async fn unmuting_at_volume_zero_raises_it_so_something_is_heard() {
    let dir = tempfile::tempdir().unwrap();
    let (v, gain, _t) = start(dir.path());
    v.set(0, Source::Local).await.unwrap();
    v.set_muted(true, Source::Local).await.unwrap();
    let before = *v.state().borrow();
    let after = v.set_muted(false, Source::Avs).await.unwrap();
    assert_eq!((after.volume, after.muted), (UNMUTE_VOLUME, false));
    assert!(
        after.unreported_volume > before.unreported_volume,
        "VolumeChanged too"
    );
    assert!(
        after.unreported_mute > before.unreported_mute,
        "and MuteChanged"
    );
    assert!(gain.get() > 0.0);
    // Unmuting at a volume above 0 leaves the volume alone.
    v.set(40, Source::Local).await.unwrap();
    v.set_muted(true, Source::Local).await.unwrap();
    assert_eq!(v.set_muted(false, Source::Local).await.unwrap().volume, 40);
}

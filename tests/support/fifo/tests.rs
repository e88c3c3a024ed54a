//! The FIFO policies tick by tick on real FIFOs, without the clock (so no
//! timing), and the clock thread running one to its end.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::OpenOptionsExt;

use super::*;

/// A fresh one-page FIFO held read-write, and a second handle on it to
/// read back what a policy wrote.
fn fifo() -> (tempfile::TempDir, File, File) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("f.fifo");
    mkfifo(&path);
    let end = open_rw(&path, Some(ONE_PAGE)).expect("open the FIFO");
    let probe = end.try_clone().expect("a second handle");
    (dir, end, probe)
}

fn read_all_queued(probe: &mut File) -> Vec<u8> {
    let mut buf = vec![0u8; queued(probe)];
    probe.read_exact(&mut buf).expect("read what is queued");
    buf
}

#[test]
fn feed_says_then_fills_with_silence_and_tops_up_only_a_nearly_empty_pipe() {
    let (_dir, mut end, mut probe) = fifo();
    let (mut feed, queue) = Feed::new(4);
    let mut said = queue.say(vec![1; 6]);
    assert!(feed.tick(&mut end).is_continue());
    assert!(feed.tick(&mut end).is_continue());
    assert_eq!(queued(&probe), 8);
    // Two chunks wait: nobody reads, nothing more is written.
    assert!(feed.tick(&mut end).is_continue());
    assert_eq!(queued(&probe), 8);
    assert_eq!(said.try_recv(), Ok(()), "all of it was written");
    assert_eq!(read_all_queued(&mut probe), [1, 1, 1, 1, 1, 1, 0, 0]);
    assert!(feed.tick(&mut end).is_continue());
    assert_eq!(
        read_all_queued(&mut probe),
        [0; 4],
        "silence after the speech"
    );
}

#[test]
fn loop_repeats_the_recording_and_throws_away_what_nobody_read() {
    let (_dir, mut end, mut probe) = fifo();
    let mut looped = Loop::new(vec![1, 2, 3, 4, 5, 6], 4);
    assert!(looped.tick(&mut end).is_continue());
    assert!(looped.tick(&mut end).is_continue());
    assert_eq!(
        read_all_queued(&mut probe),
        [5, 6, 0, 0],
        "only the fresh period"
    );
    assert!(looped.tick(&mut end).is_continue());
    assert_eq!(
        read_all_queued(&mut probe),
        [1, 2, 3, 4],
        "from the top again"
    );
}

#[test]
fn drain_reads_a_tick_at_a_time_and_counts_sound_from_the_first_non_zero_byte() {
    let (_dir, mut end, mut probe) = fifo();
    let kept = Kept::default();
    let (mut drain, sound) = Drain::new(4, Box::new(kept.clone()));
    probe
        .write_all(&[0, 0, 0, 5, 6, 7, 8, 9, 10, 11])
        .expect("write");
    assert!(drain.tick(&mut end).is_continue());
    assert_eq!(*sound.borrow(), 1);
    assert!(drain.tick(&mut end).is_continue());
    assert!(drain.tick(&mut end).is_continue());
    assert_eq!(*sound.borrow(), 7);
    // An empty pipe held read-write: nothing now, no end of file.
    assert!(drain.tick(&mut end).is_continue());
    assert_eq!(*kept.0.lock().unwrap(), [0, 0, 0, 5, 6, 7, 8, 9, 10, 11]);
    assert!(drain.failed().is_none());
}

#[test]
fn drain_ends_when_the_writer_closes_a_fifo_opened_read_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("f.fifo");
    mkfifo(&path);
    let mut reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .expect("open for reading");
    let mut writer = OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open for writing");
    writer.write_all(&[1, 2, 3]).expect("write");
    drop(writer);
    let kept = Kept::default();
    let (mut drain, _) = Drain::new(4, Box::new(kept.clone()));
    assert!(drain.tick(&mut reader).is_break(), "end of file ends it");
    assert_eq!(*kept.0.lock().unwrap(), [1, 2, 3]);
}

#[test]
fn pieces_wait_for_go_write_once_then_close_the_fifo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("f.fifo");
    mkfifo(&path);
    let end = open_rw(&path, None).expect("open the FIFO");
    // Read-only and non-blocking: end of file once the clock closes its end.
    let mut probe = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .expect("open for reading");
    let (pieces, go) = Pieces::new((1..=10).collect(), 4);
    let clock = Clocked::start(end, pieces);
    go.send(()).expect("the clock waits for go");
    let pieces = clock.join();
    assert!(pieces.started().is_some(), "it wrote");
    let mut all = Vec::new();
    probe.read_to_end(&mut all).expect("read to the end");
    assert_eq!(all, (1..=10).collect::<Vec<u8>>());
}

#[test]
fn pieces_never_told_to_go_end_unstarted() {
    let (_dir, mut end, probe) = fifo();
    let (mut pieces, go) = Pieces::new(vec![1; 8], 4);
    assert!(pieces.tick(&mut end).is_continue(), "waits for go");
    drop(go);
    assert_eq!(pieces.tick(&mut end), ControlFlow::Break(()));
    assert!(pieces.started().is_none());
    assert_eq!(queued(&probe), 0);
}

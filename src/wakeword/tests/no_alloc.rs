//! `WakeWord::process` is fed from the capture thread: it must not allocate,
//! whatever the chunk sizes. A counting allocator checks it over real speech
//! through the real model, detections included.
//!
//! Needs `AVSD_WAKEWORD_MODEL_DIR` (scripts/wakeword-model DIR).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use wakeword::{Event, WakeWord};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn processing_allocates_nothing() {
    let dir = std::env::var_os("AVSD_WAKEWORD_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        panic!("AVSD_WAKEWORD_MODEL_DIR is not set: run `scripts/wakeword-model DIR` and export it (scripts/test does both)")
    });
    let tmp = tempfile::tempdir().expect("temp dir");
    let wav = tmp.path().join("a.wav");
    let raw = tmp.path().join("a.raw");
    let ok = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "160", "-w"])
        .arg(&wav)
        .arg("Alexa, what time is it?")
        .status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "espeak-ng failed (install it: scripts/test-audio-deps)"
    );
    let ok = Command::new("sox")
        .arg("-D")
        .arg(&wav)
        .args([
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ])
        .arg(&raw)
        .args(["pad", "0.5", "0.7"])
        .status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "sox failed (install it: scripts/test-audio-deps)"
    );
    let bytes = std::fs::read(&raw).expect("read audio");
    let audio: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let mut ww = WakeWord::open(&dir.join("alexa.json")).unwrap_or_else(|e| panic!("{e}"));

    let mut detections = 0;
    let mut calls = 0;
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let mut at = 0;
    for n in [1usize, 441, 160, 7, 4096].iter().cycle() {
        if at >= audio.len() {
            break;
        }
        let end = (at + n).min(audio.len());
        ww.process(&audio[at..end], |ev| match ev {
            Event::Detected(_) => detections += 1,
            Event::Inference { .. } => calls += 1,
            Event::Features { .. } => {}
        });
        at = end;
    }
    let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert!(
        calls > 50 && detections == 1,
        "{calls} model calls, {detections} detections"
    );
    assert_eq!(allocated, 0, "process() allocated {allocated} times");
}

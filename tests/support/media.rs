//! The media files `scripts/make-media` makes, once per test run (kept in
//! `target/test-media` between runs), for the stand-in's media server.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The folder holding what `scripts/make-media` makes (`avs_sim::media::complete`); made on first
/// use (needs sox, lame and ffmpeg: `scripts/test-audio-deps`).
pub fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::repo().join("target/test-media");
        let complete = avs_sim::media::complete(&dir);
        if !complete {
            let status = Command::new(crate::repo().join("scripts/make-media"))
                .arg(&dir)
                .status()
                .expect("scripts/make-media runs");
            assert!(
                status.success(),
                "scripts/make-media failed (sox, lame and ffmpeg are needed: scripts/test-audio-deps)"
            );
        }
        dir
    })
}

//! Feeds arbitrary TOML text to the strict config loader, as avsd's config
//! (`/etc/avsd/avsd.toml`) and as the companion's (`companion.toml`), and
//! checks what `config::strict` promises: no panic; `Ok` only for a config
//! its own `validate` finds nothing wrong with; otherwise at least one
//! problem, each naming a line in the text or a key (only a syntax error
//! may have neither: the TOML parser gives no position for a few), with a
//! message and a fix, in file order; and the report names the file. The
//! `SAMPLE:RATE:CHANNELS` parser of `[audio]` is fed each line too.
//!
//! Input: the bytes as UTF-8 text (others are skipped: the loader reads
//! the file with `read_to_string`, which refuses them before parsing).
//!
//! The loaders are the `avsd-config` and `avs-companion` crates'; neither
//! links audio, D-Bus or the HTTP/2 client, which is why avsd's config is a
//! crate of its own.
//!
//! The companion's `validate` reads the file `lwa.client_secret_file`
//! names. So that a fuzzer-made path cannot make it read a FIFO, a device or
//! /proc/kcore, the companion loader runs in a scratch directory (made once
//! per process, removed at exit) holding only `client-secret`,
//! `server.crt`, `server.key` and `ca.crt`, and it gets only texts whose
//! secret path is relative without `..`. The target steps into that
//! directory only for that call and back out after it: libFuzzer reads the
//! corpus files one at a time by their given (often relative) paths.

#![no_main]

use std::path::Path;
use std::sync::Once;

use avs_companion as companion;
use avsd_config as config;

// The companion's config names the HTTPS server's connection limits.

use companion::config::CompanionConfig;
use config::{AvsdConfig, ConfigError, StrictConfig};
use libfuzzer_sys::fuzz_target;

static SCRATCH: Once = Once::new();

unsafe extern "C" {
    safe fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

fn scratch_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("avsd-fuzz-config-{}", std::process::id()))
}

extern "C" fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch_dir());
}

/// A directory with the files the seeds name.
fn make_scratch() {
    SCRATCH.call_once(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir).expect("scratch dir");
        // The seeds name these, so valid configs are reachable.
        for name in ["client-secret", "server.crt", "server.key", "ca.crt"] {
            let file = dir.join(name);
            std::fs::write(&file, "s3cret\n").expect("scratch file");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        atexit(remove_scratch);
    });
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };

    let avsd = config::parse::<AvsdConfig>(Path::new("/etc/avsd/avsd.toml"), text);
    check(text, avsd.as_ref().map(|_| ()), "/etc/avsd/avsd.toml");
    if let Ok(c) = &avsd {
        let _ = c.summary(Path::new("/etc/avsd/avsd.toml"));
        assert!(c.validate().is_empty());
    }

    if secret_path_is_sandboxed(text) {
        make_scratch();
        let path = Path::new("/etc/avsd/companion.toml");
        let back = std::env::current_dir().expect("working directory");
        std::env::set_current_dir(scratch_dir()).expect("cd scratch");
        let comp = config::parse::<CompanionConfig>(path, text);
        let valid = comp.as_ref().is_ok_and(|c| c.validate().is_empty());
        std::env::set_current_dir(back).expect("cd back");
        check(text, comp.as_ref().map(|_| ()), "/etc/avsd/companion.toml");
        if let Ok(c) = &comp {
            let _ = c.summary(path);
            assert!(valid, "the loader passed what validate refuses");
        }
    }

    for line in text.lines() {
        if let Ok(f) = config::audio::parse_format(line) {
            assert!((8_000..=192_000).contains(&f.rate) && (1..=8).contains(&f.channels));
        }
    }
});

/// Whether the companion's `validate` may read the secret file this text
/// names: absent, not a string, or a relative path that stays in the
/// scratch directory. Parsed with the loader's own TOML parser; a text it
/// cannot parse is left out (the loader's syntax errors are the same code
/// for both types, and the avsd run covers them).
fn secret_path_is_sandboxed(text: &str) -> bool {
    let Ok(doc) = toml::from_str::<toml::Table>(text) else {
        return false;
    };
    let secret = doc
        .get("lwa")
        .and_then(|lwa| lwa.get("client_secret_file"))
        .and_then(|v| v.as_str());
    match secret {
        None => true,
        Some(p) => {
            let p = Path::new(p);
            p.is_relative()
                && p.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
        }
    }
}

fn check(text: &str, result: Result<(), &ConfigError>, file: &str) {
    let Err(err) = result else {
        return;
    };
    assert_eq!(err.file, Path::new(file));
    assert!(!err.problems.is_empty(), "an error without a problem");
    // A problem may sit on the line after the last one, at end of file.
    let lines = text.matches('\n').count() + 1;
    let mut last = 0;
    for p in &err.problems {
        // Only a syntax error may be unplaced: the parser gives no position
        // for some (its recursion limit on deeply dotted keys).
        assert!(
            p.line.is_some() || !p.key.is_empty() || p.message.starts_with("not valid TOML"),
            "a problem with neither line nor key: {p:?}"
        );
        assert!(!p.message.trim().is_empty(), "no message: {p:?}");
        assert!(!p.fix.trim().is_empty(), "no fix: {p:?}");
        let line = p.line.unwrap_or(usize::MAX);
        if let Some(l) = p.line {
            assert!((1..=lines).contains(&l), "line {l} of {lines}: {p:?}");
        }
        assert!(line >= last, "problems out of order: {:?}", err.problems);
        last = line;
    }
    let shown = err.to_string();
    assert!(shown.starts_with(file), "{shown}");
}

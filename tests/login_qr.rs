//! The QR code `avsctl login` prints, read back the way a phone would:
//! the terminal's text is rendered to a picture, with the colours of a dark
//! and of a light terminal theme, and `zbarimg` (Debian's zbar-tools, an
//! independent decoder) must read exactly the login URL from both.

use std::process::Command;

use avsctl::report::{Paint, login_instructions};

/// A terminal theme: default foreground and background, as grey levels.
struct Theme {
    name: &'static str,
    fg: u8,
    bg: u8,
}

const DARK: Theme = Theme {
    name: "dark",
    fg: 0xd0,
    bg: 0x1e,
};
const LIGHT: Theme = Theme {
    name: "light",
    fg: 0x20,
    bg: 0xfa,
};

/// Grey level of an SGR colour parameter (30–37, 40–47, 90–97, 100–107).
fn sgr_grey(n: u32) -> u8 {
    match n % 10 {
        0 if n >= 90 => 0x55,
        0 => 0x00,
        7 if n >= 90 => 0xff,
        7 => 0xc0,
        _ => 0x80,
    }
}

/// Render terminal text as a terminal would (cells of 8×16 pixels, the
/// half blocks filling their half, SGR colours honoured, other characters
/// left as background: their glyphs do not matter here) into a PGM file.
fn render(text: &str, theme: &Theme, path: &std::path::Path) {
    const CW: usize = 8;
    const CH: usize = 16;
    let rows: Vec<&str> = text.lines().collect();
    let cols = rows
        .iter()
        .map(|l| strip(l).chars().count())
        .max()
        .unwrap_or(0)
        + 2;
    let (w, h) = (cols * CW, (rows.len() + 2) * CH);
    let mut px = vec![theme.bg; w * h];
    for (r, line) in rows.iter().enumerate() {
        let (mut fg, mut bg) = (theme.fg, theme.bg);
        let mut col = 1;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                let mut seq = String::new();
                for d in chars.by_ref() {
                    if d == 'm' {
                        break;
                    }
                    seq.push(d);
                }
                for p in seq.trim_start_matches('[').split(';') {
                    match p.parse::<u32>().unwrap_or(0) {
                        0 => (fg, bg) = (theme.fg, theme.bg),
                        39 => fg = theme.fg,
                        49 => bg = theme.bg,
                        n @ (30..=37 | 90..=97) => fg = sgr_grey(n),
                        n @ (40..=47 | 100..=107) => bg = sgr_grey(n),
                        _ => {}
                    }
                }
                continue;
            }
            let (top, bottom) = match c {
                '\u{2588}' => (fg, fg),
                '\u{2580}' => (fg, bg),
                '\u{2584}' => (bg, fg),
                _ => (bg, bg),
            };
            for y in 0..CH {
                let grey = if y < CH / 2 { top } else { bottom };
                let start = ((r + 1) * CH + y) * w + col * CW;
                px[start..start + CW].fill(grey);
            }
            col += 1;
        }
    }
    let mut file = format!("P5\n{w} {h}\n255\n").into_bytes();
    file.extend_from_slice(&px);
    std::fs::write(path, file).unwrap();
}

fn strip(line: &str) -> String {
    line.replace("\x1b[97;40m", "").replace("\x1b[0m", "")
}

/// What zbarimg reads from the picture, or why it read nothing.
fn zbar(path: &std::path::Path) -> Result<String, String> {
    let out = Command::new("zbarimg")
        .args(["--quiet", "--raw", "-Sdisable", "-Sqrcode.enable"])
        .arg(path)
        .output()
        .map_err(|e| format!("zbarimg: {e} (install zbar-tools: scripts/test does)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(format!(
            "zbarimg found no code ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn the_login_qr_code_scans_on_dark_and_light_terminals() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "https://pi.local:8443/provision/ABCD2345",
        "https://raspberrypi.local:8443/provision/ZK8ZNFYS",
    ] {
        let text = login_instructions(url, url.rsplit('/').next().unwrap(), Paint::Ansi);
        for theme in [DARK, LIGHT] {
            let path = dir.path().join(format!("{}.pgm", theme.name));
            render(&text, &theme, &path);
            let read =
                zbar(&path).unwrap_or_else(|e| panic!("{} theme, {url}: {e}\n{text}", theme.name));
            assert_eq!(read, url, "{} theme", theme.name);
        }
    }
}

/// The rendering is a real check: without the painted colours a light
/// theme inverts the code, which the same decoder then does not read as
/// the URL (so the test above would catch a regression to plain output).
#[test]
fn unpainted_codes_are_inverted_on_a_light_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let url = "https://pi.local:8443/provision/ABCD2345";
    let plain = login_instructions(url, "ABCD2345", Paint::Plain);
    let path = dir.path().join("plain-dark.pgm");
    render(&plain, &DARK, &path);
    assert_eq!(zbar(&path).as_deref(), Ok(url));
    let path = dir.path().join("plain-light.pgm");
    render(&plain, &LIGHT, &path);
    assert!(zbar(&path).is_err(), "zbarimg read an inverted code");
}

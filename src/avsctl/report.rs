//! `avsctl`'s output: the status report and the terminal QR code, kept
//! apart from the binary so the tests can check what a person sees.

use qrcode::{Color, EcLevel, QrCode};

/// Both interfaces' properties, as read over D-Bus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Authorization.State
    pub auth_state: String,
    /// Authorization.LoginUrl
    pub login_url: String,
    /// Authorization.UserCode
    pub user_code: String,
    /// Authorization.Method
    pub method: String,
    /// Authorization.TokenExpiresAt
    pub token_expires_at: u64,
    /// Authorization.LastError
    pub last_error: String,
    /// Authorization.LastErrorReason (empty from an avsd without it)
    pub last_error_reason: String,
    /// Dialog.State
    pub dialog_state: String,
    /// Dialog.Connection
    pub connection: String,
    /// Dialog.LastError
    pub dialog_error: String,
    /// Dialog.LastErrorReason (empty from an avsd without it)
    pub dialog_error_reason: String,
    /// Dialog.ReconnectAttempt
    pub reconnect_attempt: u32,
    /// Dialog.NextReconnectAt
    pub next_reconnect_at: u64,
    /// Speaker.Volume and Speaker.Muted (`None` from an avsd without
    /// the Speaker interface).
    pub volume: Option<(u8, bool)>,
    /// Player.PlaybackStatus (empty from an avsd without the Player)
    pub player_status: String,
    /// Player.Metadata's `xesam:title` and first `xesam:artist`, if any
    pub player_track: String,
}

/// The `avsctl status` report, without escape codes. `now` is Unix
/// seconds, for "expires in".
pub fn report(s: &Snapshot, now: u64) -> String {
    report_painted(s, now, Paint::Plain)
}

/// The `avsctl status` report with the QR code painted as `paint` says.
pub fn report_painted(s: &Snapshot, now: u64, paint: Paint) -> String {
    let method = match s.method.as_str() {
        "code" => "code-based linking (the refresh token is kept on this device)",
        "companion" => "companion web service",
        "" => "unknown",
        other => other,
    };
    let mut out = format!(
        "Authorization: {}\nLogin method:  {method}\nDialog:        {} (AVS connection: {})\n",
        s.auth_state, s.dialog_state, s.connection
    );
    if let Some((volume, muted)) = s.volume {
        out.push_str(&format!(
            "Volume:        {volume}{}\n",
            if muted { " (muted)" } else { "" }
        ));
    }
    if s.next_reconnect_at > 0 {
        out.push_str(&format!(
            "Reconnecting:  attempt {}, next try in {} s\n",
            s.reconnect_attempt,
            s.next_reconnect_at.saturating_sub(now)
        ));
    } else if s.reconnect_attempt > 0 {
        out.push_str(&format!(
            "Back-off:      {} reconnects since the link was last stable\n",
            s.reconnect_attempt
        ));
    }
    if !s.player_status.is_empty() {
        out.push_str(&format!("Player:        {}", s.player_status));
        if !s.player_track.is_empty() {
            out.push_str(&format!(" ({})", s.player_track));
        }
        out.push('\n');
    }
    if s.token_expires_at > 0 {
        let left = s.token_expires_at.saturating_sub(now);
        out.push_str(&format!(
            "Access token:  expires in {} min {} s\n",
            left / 60,
            left % 60
        ));
    }
    if !s.last_error.is_empty() {
        out.push_str(&format!(
            "Last error:    {}{}\n",
            s.last_error,
            reason(&s.last_error_reason)
        ));
    }
    if !s.dialog_error.is_empty() {
        out.push_str(&format!(
            "Dialog error:  {}{}\n",
            s.dialog_error,
            reason(&s.dialog_error_reason)
        ));
    }
    if s.auth_state == "waiting-for-user" {
        if s.login_url.is_empty() {
            out.push_str(HIDDEN_LOGIN);
        } else {
            out.push_str(&login_instructions(&s.login_url, &s.user_code, paint));
        }
    } else if s.auth_state == "unregistered" {
        out.push_str("Run `avsctl login` to link this device with your Amazon account.\n");
    }
    out
}

/// ` [reason]` after an error line, so scripts and bug reports carry
/// the machine-readable reason too; nothing from an avsd without one.
fn reason(r: &str) -> String {
    if r.is_empty() || r == "none" {
        String::new()
    } else {
        format!(" [{r}]")
    }
}

/// What `avsctl volume LEVEL` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeRequest {
    /// `N`: set the volume to N (0 to 100).
    Set(u8),
    /// `+N` / `-N`: move it by N (clamped by avsd).
    Adjust(i32),
}

/// Parse `N`, `+N` or `-N`; `Err` says what is expected.
pub fn parse_volume(text: &str) -> Result<VolumeRequest, String> {
    let expected = || format!("`{text}` is not a volume: give N (0 to 100), +N or -N");
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('+') {
        return rest
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= 100)
            .map(|n| VolumeRequest::Adjust(i32::from(n)))
            .ok_or_else(expected);
    }
    if let Some(rest) = t.strip_prefix('-') {
        return rest
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= 100)
            .map(|n| VolumeRequest::Adjust(-i32::from(n)))
            .ok_or_else(expected);
    }
    t.parse::<u8>()
        .ok()
        .filter(|n| *n <= 100)
        .map(VolumeRequest::Set)
        .ok_or_else(expected)
}

/// Said instead of the login URL and code to a caller avsd does not show
/// them to: whoever uses them first links the device to their account.
pub const HIDDEN_LOGIN: &str = "A login is waiting, but its URL and code are shown only to root and \
members of group avsd: run `sudo avsctl status`, or join the group (sudo adduser $USER avsd, \
then log in again).\n";

/// How the QR code is painted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    /// Explicit colours (bright white modules on black, ANSI SGR), so the
    /// code reads the same on dark and light terminals: for a terminal.
    Ansi,
    /// No escape codes, light modules drawn (right on a dark terminal
    /// only): for output that is piped or saved.
    Plain,
}

/// A registration code as people see it: the companion's 8-character
/// codes as `ABCD-EFGH`, the way its pages show them (it takes either
/// form when typed); any other code as it is.
pub fn display_code(code: &str) -> String {
    if code.len() == 8 && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_string()
    }
}

/// What to do to log in, with a QR code of the URL for a phone; the URL
/// and the code come after it, so they stay on a 24-line screen without
/// scrollback. When the URL carries the code (the companion's links do)
/// nobody has to type it: the code is shown to compare with the page.
/// The `To log in, open URL` line is the same either way: scripts read it.
pub fn login_instructions(url: &str, code: &str, paint: Paint) -> String {
    let mut out = qr(url, paint);
    if !code.is_empty() && url.contains(code) {
        out.push_str(&format!(
            "Scan the QR code with a phone.\nTo log in, open {url}\n\
             The link carries the code {}: check that the page shows it.\n",
            display_code(code)
        ));
    } else {
        out.push_str(&format!(
            "Scan the QR code with a phone.\nTo log in, open {url}\nand enter the code {code}\n"
        ));
    }
    out
}

/// Modules of quiet zone around the code. The standard asks for four;
/// two keep a typical login URL's code at 17 lines (80×24 fits it with the
/// text under it), and the painted background makes the border explicit.
const QUIET: usize = 2;

/// The text as a QR code in Unicode half blocks (two module rows per
/// line), light modules drawn, quiet zone included; low error correction
/// for the smallest code (a screen is not a scratched label).
pub fn qr(text: &str, paint: Paint) -> String {
    let code = match QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L) {
        Ok(code) => code,
        Err(e) => return format!("(no QR code: {e})\n"),
    };
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET;
    let light = |x: usize, y: usize| -> bool {
        if x < QUIET || y < QUIET || x >= width + QUIET || y >= width + QUIET {
            return true;
        }
        colors[(y - QUIET) * width + (x - QUIET)] == Color::Light
    };
    let mut out = String::new();
    for row in (0..size).step_by(2) {
        if paint == Paint::Ansi {
            out.push_str("\x1b[97;40m");
        }
        for x in 0..size {
            let top = light(x, row);
            // An odd size leaves the last line's lower half as quiet zone.
            let bottom = row + 1 >= size || light(x, row + 1);
            out.push(match (top, bottom) {
                (true, true) => '\u{2588}',
                (true, false) => '\u{2580}',
                (false, true) => '\u{2584}',
                (false, false) => ' ',
            });
        }
        if paint == Paint::Ansi {
            out.push_str("\x1b[0m");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_levels_are_absolute_or_relative_and_checked() {
        assert_eq!(parse_volume("30"), Ok(VolumeRequest::Set(30)));
        assert_eq!(parse_volume("+10"), Ok(VolumeRequest::Adjust(10)));
        assert_eq!(parse_volume("-5"), Ok(VolumeRequest::Adjust(-5)));
        for bad in ["150", "+101", "loud", "", "-", "3.5"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
        let s = Snapshot {
            volume: Some((30, true)),
            ..Snapshot::default()
        };
        assert!(report(&s, 0).contains("Volume:        30 (muted)\n"));
        assert!(!report(&Snapshot::default(), 0).contains("Volume"));
    }

    #[test]
    fn report_shows_the_reconnect_back_off() {
        let waiting = Snapshot {
            auth_state: "authorized".into(),
            dialog_state: "idle".into(),
            connection: "disconnected".into(),
            reconnect_attempt: 3,
            next_reconnect_at: 1_000_004,
            ..Snapshot::default()
        };
        let text = report(&waiting, 1_000_000);
        assert!(
            text.contains("Reconnecting:  attempt 3, next try in 4 s"),
            "{text}"
        );
        let up = Snapshot {
            connection: "connected".into(),
            next_reconnect_at: 0,
            ..waiting
        };
        let text = report(&up, 1_000_000);
        assert!(text.contains("3 reconnects since"), "{text}");
        assert!(!text.contains("Reconnecting"), "{text}");
        let stable = Snapshot {
            reconnect_attempt: 0,
            ..up
        };
        assert!(!report(&stable, 1_000_000).contains("Back-off"));
    }

    #[test]
    fn waiting_report_shows_url_code_and_a_qr_code() {
        let s = Snapshot {
            auth_state: "waiting-for-user".into(),
            login_url: "https://pi.local:8443/provision/ABCD2345".into(),
            user_code: "ABCD2345".into(),
            dialog_state: "idle".into(),
            connection: "disconnected".into(),
            ..Snapshot::default()
        };
        let text = report(&s, 0);
        assert!(text.contains("https://pi.local:8443/provision/ABCD2345"));
        assert!(text.contains('\u{2588}'), "no QR blocks:\n{text}");
        // The URL and the code come after the QR code, readable at the end;
        // the code as the companion's page shows it, and nothing to type.
        let qr_end = text.rfind('\u{2588}').unwrap();
        assert!(text.rfind("ABCD-2345").unwrap() > qr_end, "{text}");
        assert!(!text.contains("enter the code"), "{text}");
        assert!(!text.contains('\x1b'), "plain report has escapes:\n{text}");
    }

    #[test]
    fn a_code_the_url_does_not_carry_is_to_be_entered_as_it_is() {
        let text = login_instructions("https://www.amazon.com/us/code", "CBX9PQ", Paint::Plain);
        assert!(text.ends_with("and enter the code CBX9PQ\n"), "{text}");
        assert_eq!(display_code("ZK8ZNFYS"), "ZK8Z-NFYS");
        assert_eq!(display_code("CBX9PQ"), "CBX9PQ");
    }

    /// A Pi's console is 80×24 without scrollback: the QR code, the URL,
    /// the code and avsctl's "Waiting" line all fit on it, URL last.
    #[test]
    fn login_fits_an_80_by_24_console() {
        for url in [
            "https://pi.local:8443/provision/ABCD2345",
            "https://raspberrypi.local:8443/provision/ABCD2345",
        ] {
            let text = login_instructions(url, "ABCD2345", Paint::Ansi);
            let lines: Vec<&str> = text.lines().collect();
            // One more for "Waiting...", one for the shell prompt after.
            assert!(lines.len() + 2 <= 24, "{} lines:\n{text}", lines.len());
            for line in &lines {
                let visible = line.replace("\x1b[97;40m", "").replace("\x1b[0m", "");
                assert!(visible.chars().count() <= 80, "too wide: {visible}");
            }
        }
    }

    #[test]
    fn errors_carry_their_reason_for_scripts() {
        let s = Snapshot {
            auth_state: "error".into(),
            last_error: "cannot reach the companion".into(),
            last_error_reason: "companion-unreachable".into(),
            dialog_error: "the microphone is muted".into(),
            dialog_error_reason: "microphone-muted".into(),
            ..Snapshot::default()
        };
        let text = report(&s, 0);
        assert!(
            text.contains("Last error:    cannot reach the companion [companion-unreachable]\n"),
            "{text}"
        );
        assert!(
            text.contains("Dialog error:  the microphone is muted [microphone-muted]\n"),
            "{text}"
        );
        // An older avsd without the reason: the line as before.
        let old = Snapshot {
            last_error_reason: String::new(),
            ..s
        };
        assert!(report(&old, 0).contains("Last error:    cannot reach the companion\n"));
    }

    #[test]
    fn report_says_which_login_method_is_used() {
        let s = Snapshot {
            auth_state: "authorized".into(),
            method: "code".into(),
            ..Snapshot::default()
        };
        let text = report(&s, 0);
        assert!(text.contains("Login method:  code-based linking"), "{text}");
        let s = Snapshot {
            method: "companion".into(),
            ..s
        };
        assert!(report(&s, 0).contains("Login method:  companion web service"));
    }

    /// Read the half-block picture back into pixels and decode it with an
    /// independent QR decoder: the phone must get exactly the URL.
    #[test]
    fn terminal_qr_code_decodes_to_the_url() {
        let url = "https://pi.local:8443/provision/ABCD2345";
        let art = qr(url, Paint::Plain);
        let lines: Vec<Vec<char>> = art.lines().map(|l| l.chars().collect()).collect();
        let (w, h) = (lines[0].len(), lines.len() * 2);
        let light = |x: usize, y: usize| {
            let c = lines[y / 2].get(x).copied().unwrap_or(' ');
            let top = matches!(c, '\u{2580}' | '\u{2588}');
            let bottom = matches!(c, '\u{2584}' | '\u{2588}');
            if y.is_multiple_of(2) { top } else { bottom }
        };
        let scale = 4;
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w * scale, h * scale, |x, y| {
            if light(x / scale, y / scale) { 255 } else { 0 }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "no QR code found in:\n{art}");
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, url);
    }

    #[test]
    fn a_caller_not_shown_the_code_is_told_who_may_see_it() {
        let s = Snapshot {
            auth_state: "waiting-for-user".into(),
            ..Snapshot::default()
        };
        let text = report(&s, 0);
        assert!(text.contains("group avsd"), "{text}");
        assert!(!text.contains("open"), "no empty instructions:\n{text}");
    }

    #[test]
    fn authorized_report_shows_expiry() {
        let s = Snapshot {
            auth_state: "authorized".into(),
            token_expires_at: 1000 + 3599,
            ..Snapshot::default()
        };
        assert!(report(&s, 1000).contains("expires in 59 min 59 s"));
    }
}

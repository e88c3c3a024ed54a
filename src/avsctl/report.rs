//! `avsctl`'s output: the status report and the terminal QR code, kept
//! apart from the binary so the tests can check what a person sees.

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

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
    /// Dialog.State
    pub dialog_state: String,
    /// Dialog.Connection
    pub connection: String,
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

/// The `avsctl status` report. `now` is Unix seconds, for "expires in".
pub fn report(s: &Snapshot, now: u64) -> String {
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
        out.push_str(&format!("Last error:    {}\n", s.last_error));
    }
    if s.auth_state == "waiting-for-user" {
        if s.login_url.is_empty() {
            out.push_str(HIDDEN_LOGIN);
        } else {
            out.push_str(&login_instructions(&s.login_url, &s.user_code));
        }
    } else if s.auth_state == "unregistered" {
        out.push_str("Run `avsctl login` to link this device with your Amazon account.\n");
    }
    out
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

/// What to do to log in, with a QR code of the URL for a phone; the URL
/// and the code stay the last lines, readable under the QR code.
pub fn login_instructions(url: &str, code: &str) -> String {
    let mut out = String::from("\nScan this with your phone, or open the page below:\n\n");
    out.push_str(&qr(url));
    out.push_str(&format!(
        "\nTo log in, open {url}\nand enter the code {code}\n"
    ));
    out
}

/// The URL as a QR code in Unicode half blocks (two rows per line), light
/// modules drawn, for the usual dark terminal; the quiet zone included.
pub fn qr(text: &str) -> String {
    match QrCode::new(text.as_bytes()) {
        Ok(code) => {
            let mut img = code
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .quiet_zone(true)
                .build();
            img.push('\n');
            img
        }
        Err(e) => format!("(no QR code: {e})\n"),
    }
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
        assert!(text.contains("ABCD2345"));
        assert!(text.contains('\u{2588}'), "no QR blocks:\n{text}");
        // The URL and the code come after the QR code, readable at the end.
        let qr_end = text.rfind('\u{2588}').unwrap();
        assert!(
            text.rfind("enter the code ABCD2345").unwrap() > qr_end,
            "{text}"
        );
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
        let art = qr(url);
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

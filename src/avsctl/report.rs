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
    /// Player.PlaybackStatus (empty from an avsd without the Player)
    pub player_status: String,
    /// Player.Metadata's `xesam:title` and first `xesam:artist`, if any
    pub player_track: String,
}

/// The `avsctl status` report. `now` is Unix seconds, for "expires in".
pub fn report(s: &Snapshot, now: u64) -> String {
    let mut out = format!(
        "Authorization: {}\nDialog:        {} (AVS connection: {})\n",
        s.auth_state, s.dialog_state, s.connection
    );
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

/// Said instead of the login URL and code to a caller avsd does not show
/// them to: whoever uses them first links the device to their account.
pub const HIDDEN_LOGIN: &str = "A login is waiting, but its URL and code are shown only to root and \
members of group avsd: run `sudo avsctl status`, or join the group (sudo adduser $USER avsd, \
then log in again).\n";

/// What to do to log in, with a QR code of the URL for a phone.
pub fn login_instructions(url: &str, code: &str) -> String {
    let mut out = format!(
        "\nTo log in, open {url}\nand enter the code {code} (or scan this with your phone):\n\n"
    );
    out.push_str(&qr(url));
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

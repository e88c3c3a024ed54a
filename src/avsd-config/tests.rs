use std::path::Path;

use super::*;

fn parse_avsd(text: &str) -> Result<AvsdConfig, ConfigError> {
    parse::<AvsdConfig>(Path::new("/etc/avsd/avsd.toml"), text)
}

/// Each problem's line and key, in order.
fn located(err: &ConfigError) -> Vec<(Option<usize>, &str)> {
    err.problems
        .iter()
        .map(|p| (p.line, p.key.as_str()))
        .collect()
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse_avsd("").unwrap();
    assert_eq!(c.log.level, "info");
    assert!(c.companion.register_on_start);
    assert!(c.companion.url.is_empty());
}

#[test]
fn typo_names_file_line_key_and_suggestion() {
    let err =
        parse_avsd("[log]\nlevel = \"debug\"\n\n[companion]\nurll = \"https://x\"\n").unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    let p = &err.problems[0];
    assert_eq!(p.line, Some(5));
    assert_eq!(p.key, "companion.urll");
    assert!(p.fix.contains("did you mean `url`"), "{}", p.fix);
    let shown = err.to_string();
    assert!(shown.contains("/etc/avsd/avsd.toml:5"), "{shown}");
}

#[test]
fn wrong_type_names_key_and_expected_value() {
    let err = parse_avsd("[companion]\nregister_on_start = \"yes\"\n").unwrap_err();
    let p = &err.problems[0];
    assert_eq!(
        (p.line, p.key.as_str()),
        (Some(2), "companion.register_on_start")
    );
    assert!(p.fix.contains("true or false"), "{}", p.fix);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "[log]\nlevl = \"info\"\n[device]\nproduct_id = 7\n[bogus]\nx = 1\n";
    let err = parse_avsd(text).unwrap_err();
    assert_eq!(
        located(&err),
        vec![
            (Some(2), "log.levl"),
            (Some(4), "device.product_id"),
            (Some(5), "bogus"),
        ],
        "{err}"
    );
}

#[test]
fn semantic_problems_are_located_too() {
    let text = "[log]\nlevel = \"loud\"\n[companion]\nurl = \"http://pi.local\"\n";
    let err = parse_avsd(text).unwrap_err();
    assert_eq!(
        located(&err),
        vec![(Some(2), "log.level"), (Some(4), "companion.url")]
    );
    assert!(err.problems[1].fix.contains("https://"));
}

#[test]
fn intervals_out_of_range_say_what_avs_expects() {
    let text = "[avs]\nping_interval_secs = 0\ninactivity_report_secs = 7200\n";
    let err = parse_avsd(text).unwrap_err();
    assert_eq!(
        located(&err),
        vec![
            (Some(2), "avs.ping_interval_secs"),
            (Some(3), "avs.inactivity_report_secs")
        ]
    );
    assert!(err.problems[1].fix.contains("every hour"), "{err}");
    let ok = parse_avsd("[avs]\ninactivity_report_secs = 2\n").unwrap();
    assert_eq!(ok.avs.inactivity_report_secs, 2);
    assert_eq!(parse_avsd("").unwrap().avs.inactivity_report_secs, 3600);
}

#[test]
fn syntax_error_has_a_line() {
    let err = parse_avsd("[log]\nlevel = \"info\n").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].line, Some(2));
    assert!(err.problems[0].message.starts_with("not valid TOML"));
}

#[test]
fn syntax_errors_that_toml_edit_panics_on_are_reported() {
    // Found by fuzz/fuzz_targets/config.rs (fuzz/corpus/config/toml_edit_panic).
    let err = parse_avsd("==a\n.=-").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].line, Some(1));
    assert!(err.problems[0].message.starts_with("not valid TOML"));
}

#[test]
fn missing_file_says_how_to_fix() {
    let err = load::<AvsdConfig>(Path::new("/nonexistent/avsd.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/avsd.toml"));
    assert!(err.problems[0].fix.contains("--config"));
}

#[test]
fn multibyte_text_keeps_later_lines_right() {
    let text = "[device]\nserail = \"ünïcødé\"\nproduct_id = 5\n";
    let err = parse_avsd(text).unwrap_err();
    let lines: Vec<_> = err.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![Some(2), Some(3)], "{err}");
}

#[test]
fn parse_and_semantic_problems_come_together() {
    let text = "[log]\nlevl = \"info\"\n[companion]\nurl = \"http://x\"\n";
    let err = parse_avsd(text).unwrap_err();
    let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, vec!["log.levl", "companion.url"], "{err}");
}

#[test]
fn the_back_off_reset_is_a_setting_with_a_range() {
    assert_eq!(parse_avsd("").unwrap().avs.stable_after_secs, 60);
    let ok = parse_avsd("[avs]\nstable_after_secs = 2\n").unwrap();
    assert_eq!(ok.avs.stable_after_secs, 2);
    let err = parse_avsd("[avs]\nstable_after_secs = 0\n").unwrap_err();
    assert_eq!(located(&err), vec![(Some(2), "avs.stable_after_secs")]);
    assert!(err.problems[0].fix.contains("back-off"), "{err}");
}

#[test]
fn the_mixer_control_is_an_alsa_name_or_unset() {
    assert_eq!(parse_avsd("").unwrap().audio.mixer_control, None);
    let ok = parse_avsd("[audio]\nmixer_control = \"PCM\"\n").unwrap();
    assert_eq!(ok.audio.mixer_control.as_deref(), Some("PCM"));
    for bad in ["\"\"", "\"PCM\\u0007\"", "7"] {
        let err = parse_avsd(&format!("[audio]\nmixer_control = {bad}\n")).unwrap_err();
        assert_eq!(
            located(&err),
            vec![(Some(2), "audio.mixer_control")],
            "{bad}: {err}"
        );
    }
    let long = format!("[audio]\nmixer_control = \"{}\"\n", "x".repeat(44));
    assert!(parse_avsd(&long).is_err());
}

#[test]
fn the_mixer_card_comes_from_the_playback_device() {
    use crate::audio::mixer_card;
    assert_eq!(mixer_card("plughw:CARD=Headphones"), "hw:CARD=Headphones");
    assert_eq!(mixer_card("hw:CARD=Device,DEV=0"), "hw:CARD=Device");
    assert_eq!(mixer_card("plughw:1,0"), "hw:1");
    assert_eq!(mixer_card("default"), "default");
    assert_eq!(mixer_card("spk"), "default");
}

#[test]
fn auth_method_and_client_id_are_checked() {
    let c = parse_avsd("").unwrap();
    assert_eq!(c.auth.method, "companion");
    assert!(!c.auth.is_code());
    let err = parse_avsd("[auth]\nmethod = \"qr\"\n").unwrap_err();
    assert_eq!(located(&err), vec![(Some(2), "auth.method")], "{err}");
    assert!(err.problems[0].fix.contains("\"code\""), "{err}");
    let err = parse_avsd("[log]\nlevel = \"info\"\n[auth]\nmethod = \"code\"\n").unwrap_err();
    assert_eq!(err.problems[0].key, "auth.client_id", "{err}");
    assert!(
        err.problems[0].fix.contains("Other devices and platforms"),
        "{err}"
    );
    let err = parse_avsd("[auth]\nmethod = \"code\"\nclient_id = \"x\"\nlwa_url = \"http://a\"\n")
        .unwrap_err();
    assert_eq!(located(&err), vec![(Some(4), "auth.lwa_url")], "{err}");
    let err = parse_avsd("[auth]\nclientid = \"x\"\n").unwrap_err();
    assert!(err.problems[0].fix.contains("client_id"), "{err}");
    let c =
        parse_avsd("[auth]\nmethod = \"code\"\nclient_id = \"amzn1.application-oa2-client.x\"\n")
            .unwrap();
    assert!(c.auth.is_code());
    assert_eq!(c.auth.lwa_url, "https://api.amazon.com");
}

#[test]
fn wakeword_is_off_by_default_and_checked_strictly() {
    let c = parse_avsd("").unwrap();
    assert!(!c.wakeword.enabled);
    assert_eq!(
        c.wakeword.model,
        std::path::PathBuf::from(wakeword::DEFAULT_MODEL)
    );
    let c = parse_avsd("[wakeword]\nenabled = true\nmodel = \"/m/alexa.json\"\n").unwrap();
    assert!(c.wakeword.enabled);
    for bad in [
        "[wakeword]\nenabled = \"yes\"\n",
        "[wakeword]\nmodel = \"alexa.json\"\n",
        "[wakeword]\nprofile = \"CLOSE_TALK\"\n",
        "[wakeword]\nsensitivity = 3\n",
    ] {
        assert!(parse_avsd(bad).is_err(), "{bad}");
    }
}

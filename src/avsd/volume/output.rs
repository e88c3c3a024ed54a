//! Where the volume is applied: a software gain on the mixed output, or an
//! ALSA mixer control of the playback card (`audio.mixer_control`).

use alsa::Round;
use alsa::mixer::{Mixer, Selem, SelemId};

use crate::audio::mixer::MasterGain;

/// Where the volume goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// A gain on the mix, read by the audio callback ([`gain_for`]).
    Software(MasterGain),
    /// A simple control (`PCM`) of an ALSA card (`hw:CARD=Headphones`);
    /// the mix stays at unity.
    Alsa {
        /// The card's control device, e.g. `hw:CARD=Headphones`.
        card: String,
        /// The simple control's name, e.g. `PCM`.
        control: String,
    },
}

/// The amplitude for a volume of 0 to 100: the cube of the fraction,
/// PulseAudio's software volume curve.
///
/// Why a cube: loudness follows the logarithm of amplitude, so a linear
/// slider does everything in its top tenth and sounds nearly full from
/// the middle up. A cube is close to a straight line in decibels over the
/// range that matters (75 → -7.5 dB, 50 → -18 dB, 30 → -31 dB, 10 → -60 dB),
/// reaches true silence at 0 with no table and no floor to pick, and is
/// what Linux desktop sliders do, so "30" sounds like 30 elsewhere.
/// Muted is silent whatever the volume.
pub fn gain_for(volume: u8, muted: bool) -> f32 {
    if muted {
        return 0.0;
    }
    let x = f32::from(volume.min(100)) / 100.0;
    x * x * x
}

impl Output {
    /// The ALSA control `control` of `card`, checked now so that a wrong
    /// name is reported at start with what the card has.
    pub fn alsa(card: &str, control: &str) -> Result<Output, String> {
        let mixer = open(card)?;
        find(&mixer, card, control)?;
        Ok(Output::Alsa {
            card: card.to_string(),
            control: control.to_string(),
        })
    }

    /// Apply `volume` and `muted`; `Err` says what failed, for the log.
    pub fn apply(&self, volume: u8, muted: bool) -> Result<(), String> {
        match self {
            Output::Software(gain) => {
                gain.set(gain_for(volume, muted));
                Ok(())
            }
            Output::Alsa { card, control } => {
                // Opened per change: changes are rare, and a handle kept
                // open would be stale after the card's driver restarts.
                let mixer = open(card)?;
                let selem = find(&mixer, card, control)?;
                set(&selem, volume, muted)
                    .map_err(|e| format!("ALSA control {control:?} of {card}: {e}"))
            }
        }
    }
}

fn open(card: &str) -> Result<Mixer, String> {
    Mixer::new(card, false).map_err(|e| {
        format!(
            "cannot open the ALSA mixer of {card}: {e}; check audio.playback_device names \
             the card (as plughw:CARD=NAME) and that avsd's user is in group `audio`"
        )
    })
}

fn find<'a>(mixer: &'a Mixer, card: &str, control: &str) -> Result<Selem<'a>, String> {
    let found = mixer
        .find_selem(&SelemId::new(control, 0))
        .filter(Selem::has_playback_volume);
    found.ok_or_else(|| {
        let names: Vec<String> = mixer
            .iter()
            .filter_map(Selem::new)
            .filter(Selem::has_playback_volume)
            .filter_map(|s| s.get_id().get_name().ok().map(str::to_string))
            .collect();
        format!(
            "the ALSA card {card} has no playback volume control named {control:?} \
             (it has: {}); set audio.mixer_control to one of these, or remove it for a \
             software volume",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )
    })
}

/// The same curve as the software gain, in decibels when the control
/// knows them (most do); else spread over its raw steps.
fn set(selem: &Selem<'_>, volume: u8, muted: bool) -> alsa::Result<()> {
    let gain = gain_for(volume, false);
    let (min_db, max_db) = selem.get_playback_db_range();
    if max_db > min_db {
        let db = if gain > 0.0 {
            (20.0 * gain.log10()).max(min_db.to_db()) + max_db.to_db()
        } else {
            min_db.to_db()
        };
        selem.set_playback_db_all(
            alsa::mixer::MilliBel::from_db(db.min(max_db.to_db())),
            Round::Floor,
        )?;
    } else {
        let (lo, hi) = selem.get_playback_volume_range();
        let raw = lo + ((hi - lo) as f32 * gain).round() as i64;
        selem.set_playback_volume_all(raw.clamp(lo, hi))?;
    }
    let silent = muted || volume == 0;
    if selem.has_playback_switch() {
        selem.set_playback_switch_all(i32::from(!silent))?;
    } else if silent {
        let (lo, _) = selem.get_playback_volume_range();
        selem.set_playback_volume_all(lo)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(volume: u8) -> f32 {
        20.0 * gain_for(volume, false).log10()
    }

    #[test]
    fn the_curve_is_a_cube_from_silence_to_unity() {
        assert_eq!(gain_for(100, false), 1.0);
        assert_eq!(gain_for(0, false), 0.0);
        assert_eq!(gain_for(100, true), 0.0);
        assert!((gain_for(50, false) - 0.125).abs() < 1e-6);
        assert!((db(30) + 31.37).abs() < 0.05, "{}", db(30));
        // Each step is quieter than the one above it.
        for v in 1..=100 {
            assert!(gain_for(v, false) > gain_for(v - 1, false));
        }
    }

    #[test]
    fn a_card_that_is_not_there_is_named_in_the_error() {
        let e = Output::alsa("hw:CARD=NoSuchCard", "PCM").unwrap_err();
        assert!(e.contains("hw:CARD=NoSuchCard"), "{e}");
        assert!(e.contains("audio.playback_device"), "{e}");
    }
}

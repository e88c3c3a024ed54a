//! Where the wake word lies in the captured audio. The engine reports
//! only when its averaged probability crossed the cutoff, which is near the
//! word's end (or a little after it); AVS wants the word's start and end.
//! Both are found from the loudness of the 10 ms chunks around that point.

/// Samples per chunk (10 ms at 16 kHz).
pub const CHUNK_SAMPLES: u64 = 160;
/// The longest a wake word is taken to be.
const MAX_WORD_CHUNKS: usize = 120;
/// The shortest.
const MIN_WORD_CHUNKS: usize = 25;
/// A quiet run this long (80 ms) separates the word from what is around it;
/// shorter ones are inside the word (the stop of the "x" in "Alexa").
const GAP_CHUNKS: usize = 8;
/// How far before the detection the word may have ended (the engine's
/// sliding window reports a little late).
const LATE_CHUNKS: usize = 40;

/// The word's first and last chunk (inclusive) among `loud` (one flag per
/// chunk, oldest first), given that the engine fired at chunk `fired`.
pub fn word_chunks(loud: &[bool], fired: usize) -> (usize, usize) {
    let fired = fired.min(loud.len().saturating_sub(1));
    // The end: the last loud chunk at or before `fired`, within reach.
    let earliest_end = fired.saturating_sub(LATE_CHUNKS);
    let end = (earliest_end..=fired)
        .rev()
        .find(|&i| loud[i])
        .unwrap_or(fired);
    // The start: back through the word until a long enough quiet run.
    let floor = end.saturating_sub(MAX_WORD_CHUNKS);
    let mut start = end;
    let mut quiet = 0;
    let mut i = end;
    while i > floor {
        i -= 1;
        if loud[i] {
            start = i;
            quiet = 0;
        } else {
            quiet += 1;
            if quiet >= GAP_CHUNKS && end - start + 1 >= MIN_WORD_CHUNKS {
                break;
            }
        }
    }
    if end - start + 1 < MIN_WORD_CHUNKS {
        start = end.saturating_sub(MIN_WORD_CHUNKS - 1);
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pattern: &[(bool, usize)]) -> Vec<bool> {
        pattern
            .iter()
            .flat_map(|&(v, n)| std::iter::repeat_n(v, n))
            .collect()
    }

    #[test]
    fn a_word_between_silences_is_found_even_with_a_short_gap_inside() {
        // 1 s quiet, "Ale" 30, 5 quiet (the stop), "xa" 30, then 30 quiet.
        let loud = flags(&[
            (false, 100),
            (true, 30),
            (false, 5),
            (true, 30),
            (false, 30),
        ]);
        assert_eq!(word_chunks(&loud, 180), (100, 164));
        // Fired in the pause before the next words.
        let loud = flags(&[(false, 100), (true, 65), (false, 25), (true, 40)]);
        assert_eq!(word_chunks(&loud, 175), (100, 164));
    }

    #[test]
    fn speech_without_pauses_is_cut_at_the_longest_word() {
        let loud = vec![true; 400];
        assert_eq!(word_chunks(&loud, 300), (300 - MAX_WORD_CHUNKS, 300));
        let quiet = vec![false; 400];
        assert_eq!(word_chunks(&quiet, 300), (300 - MIN_WORD_CHUNKS + 1, 300));
        assert_eq!(word_chunks(&[true; 3], 10), (0, 2));
    }
}

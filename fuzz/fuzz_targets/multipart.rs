//! Feeds arbitrary bytes to the multipart parser, cut at fuzzer-chosen
//! points, and checks that it never panics, that its buffer stays within
//! the limits, and that every split gives the same parts and the same error
//! as the whole body at once.
//!
//! Input layout: byte 0 = how many chunk sizes follow (mod 16), then one
//! byte per size (1..=256), then the body. With no sizes, 1-byte chunks.
//!
//! The parser is the `avs-proto` crate's, which links only bytes, memchr,
//! serde and a few more: no TLS, D-Bus or audio to build with fuzzing
//! instrumentation.

#![no_main]

use avs_proto::multipart;

use libfuzzer_sys::fuzz_target;
use multipart::{Piece, Limits, MultipartError, Parser};

/// Short, so random inputs meet it and its prefixes often.
const BOUNDARY: &str = "fuzzb";

/// Small, so the fuzzer reaches every limit.
const LIMITS: Limits = Limits {
    max_preamble: 64,
    max_header_block: 128,
    max_headers: 4,
    max_json_part: 256,
};

fn outcome<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Piece>, Option<MultipartError>) {
    let delimiter = BOUNDARY.len() + 4;
    let bound = (LIMITS.max_header_block + 3).max(LIMITS.max_json_part + delimiter);
    let mut parser = Parser::new(BOUNDARY, LIMITS).expect("valid boundary");
    let mut events: Vec<Piece> = Vec::new();
    let mut drain = |parser: &mut Parser| -> Option<MultipartError> {
        loop {
            match parser.next_piece() {
                Ok(Some(Piece::Data(d))) => {
                    assert!(!d.is_empty(), "empty Data event");
                    match events.last_mut() {
                        Some(Piece::Data(prev)) => {
                            *prev = [prev.as_ref(), d.as_ref()].concat().into()
                        }
                        _ => events.push(Piece::Data(d)),
                    }
                }
                Ok(Some(other)) => events.push(other),
                Ok(None) => {
                    assert!(
                        parser.buffered_len() <= bound,
                        "buffered {}",
                        parser.buffered_len()
                    );
                    return None;
                }
                Err(err) => return Some(err),
            }
        }
    };
    for chunk in chunks {
        parser.push(chunk);
        if let Some(err) = drain(&mut parser) {
            return (events, Some(err));
        }
    }
    parser.finish();
    let err = drain(&mut parser);
    (events, err)
}

fuzz_target!(|input: &[u8]| {
    let Some((&count, rest)) = input.split_first() else {
        return;
    };
    let count = usize::from(count % 16).min(rest.len());
    let (sizes, body) = rest.split_at(count);
    let sizes: Vec<usize> = sizes.iter().map(|s| usize::from(*s) + 1).collect();

    let whole = outcome(std::iter::once(body));
    let split = if sizes.is_empty() {
        outcome(body.chunks(1))
    } else {
        let mut cuts = Vec::new();
        let mut rest = body;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at((*size).min(rest.len()));
            cuts.push(head);
            rest = tail;
        }
        outcome(cuts.into_iter())
    };
    assert_eq!(whole, split, "split changed the outcome");
});

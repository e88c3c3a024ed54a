use bytes::Bytes;

use crate::multipart::{
    ContentTypeError, Limits, MultipartError, Parser, Piece, boundary_from_content_type,
};

/// Feeds `chunks`, then ends the body; returns events with adjacent `Data`
/// merged (their cut points depend on the chunking) and the error, if any.
fn run(boundary: &str, limits: Limits, chunks: &[&[u8]]) -> (Vec<Piece>, Option<MultipartError>) {
    let mut parser = Parser::new(boundary, limits).expect("valid boundary");
    let mut events = Vec::new();
    let drain = |parser: &mut Parser, events: &mut Vec<Piece>| -> Option<MultipartError> {
        loop {
            match parser.next_piece() {
                Ok(Some(Piece::Data(d))) => {
                    if let Some(Piece::Data(prev)) = events.last_mut() {
                        let mut joined = prev.to_vec();
                        joined.extend_from_slice(&d);
                        *prev = Bytes::from(joined);
                    } else {
                        events.push(Piece::Data(d));
                    }
                }
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => return None,
                Err(e) => return Some(e),
            }
        }
    };
    for chunk in chunks {
        parser.push(chunk);
        if let Some(e) = drain(&mut parser, &mut events) {
            return (events, Some(e));
        }
    }
    parser.finish();
    let err = drain(&mut parser, &mut events);
    (events, err)
}

fn one(body: &[u8]) -> (Vec<Piece>, Option<MultipartError>) {
    run("b", Limits::default(), &[body])
}

fn bytewise(body: &[u8]) -> (Vec<Piece>, Option<MultipartError>) {
    let chunks: Vec<&[u8]> = body.chunks(1).collect();
    run("b", Limits::default(), &chunks)
}

fn data(s: &[u8]) -> Piece {
    Piece::Data(Bytes::copy_from_slice(s))
}

const RESPONSE: &[u8] = b"--b\r\nContent-Type: application/json\r\n\r\n{\"directive\":{}}\r\n\
--b\r\nContent-Type: application/octet-stream\r\nContent-ID: <TTS_1>\r\n\r\nMP3\r\n--b--\r\n";

#[test]
fn parses_json_and_binary_parts_with_content_id() {
    let (events, err) = one(RESPONSE);
    assert_eq!(err, None);
    let [
        Piece::PartStart(h1),
        d1,
        Piece::PartEnd,
        Piece::PartStart(h2),
        d2,
        Piece::PartEnd,
        Piece::End,
    ] = events.as_slice()
    else {
        panic!("unexpected events {events:?}");
    };
    assert!(h1.is_json());
    assert_eq!(*d1, data(b"{\"directive\":{}}"));
    assert!(!h2.is_json());
    assert_eq!(h2.content_id.as_deref(), Some("TTS_1"));
    assert_eq!(*d2, data(b"MP3"));
    assert_eq!(bytewise(RESPONSE), (events, None));
}

#[test]
fn tolerates_preamble_padding_and_leading_crlf() {
    let body = b"ignored preamble\r\n--b  \t\r\nX-A: 1\r\n\r\nx\r\n--b--epilogue";
    let (events, err) = one(body);
    assert_eq!(err, None);
    assert_eq!(events.len(), 4);
    assert_eq!(events[1], data(b"x"));
    let crlf_first = b"\r\n--b\r\n\r\nx\r\n--b--";
    assert_eq!(one(crlf_first).1, None);
    assert_eq!(bytewise(body).0, events);
}

#[test]
fn empty_header_block_and_empty_part() {
    let (events, err) = one(b"--b\r\n\r\n\r\n--b--");
    assert_eq!(err, None);
    assert_eq!(events.len(), 3, "{events:?}");
}

#[test]
fn boundary_like_bytes_inside_binary_part_stay_data() {
    let payload = b"\r\n-\r\n--\r\n--a\r\n--bb";
    let mut body = b"--b\r\n\r\n".to_vec();
    body.extend_from_slice(payload);
    body.extend_from_slice(b"\r\n--b--");
    // "\r\n--bb" is the delimiter followed by 'b': malformed by RFC 2046.
    let (_, err) = one(&body);
    assert!(
        matches!(
            err,
            Some(MultipartError::BadDelimiterLine { found: b'b', .. })
        ),
        "{err:?}"
    );
    let payload = b"\r\n-\r\n--\r\n--a\r\n-\r";
    let mut body = b"--b\r\n\r\n".to_vec();
    body.extend_from_slice(payload);
    body.extend_from_slice(b"\r\n--b--");
    let (events, err) = bytewise(&body);
    assert_eq!(err, None);
    assert_eq!(events[1], data(payload));
}

#[test]
fn folded_and_case_insensitive_headers() {
    let body = b"--b\r\ncontent-TYPE: Application/JSON;\r\n charset=UTF-8\r\ncontent-id: plain\r\n\r\n{}\r\n--b--";
    let (events, err) = one(body);
    assert_eq!(err, None);
    let Piece::PartStart(h) = &events[0] else {
        panic!()
    };
    assert!(h.is_json());
    assert_eq!(
        h.content_type.as_deref(),
        Some("Application/JSON; charset=UTF-8")
    );
    assert_eq!(h.get("Content-Id"), Some("plain"));
}

#[test]
fn truncated_bodies_are_errors() {
    for cut in [0, 2, 4, 10, 40, RESPONSE.len() - 3] {
        let (_, err) = one(&RESPONSE[..cut]);
        assert!(
            matches!(err, Some(MultipartError::UnexpectedEof { offset, .. }) if offset == cut as u64),
            "cut {cut}: {err:?}"
        );
    }
}

#[test]
fn limits_are_enforced_at_stable_offsets() {
    let limits = Limits {
        max_preamble: 8,
        max_header_block: 32,
        max_headers: 2,
        max_json_part: 4,
    };
    let cases: [(&[u8], MultipartError); 5] = [
        (
            b"0123456789\r\n--b--",
            MultipartError::PreambleTooLong { limit: 8 },
        ),
        (
            b"--b\r\nX-Long-Header: 0123456789abcdefghijk\r\n\r\n",
            MultipartError::HeaderBlockTooLarge {
                offset: 5,
                limit: 32,
            },
        ),
        (
            b"--b\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
            MultipartError::TooManyHeaders {
                offset: 5,
                limit: 2,
            },
        ),
        (
            b"--b\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\r\n--b--",
            MultipartError::JsonPartTooLarge {
                offset: 39,
                limit: 4,
            },
        ),
        (
            b"--b                                  \r\n",
            MultipartError::PaddingTooLong {
                offset: 3,
                limit: 32,
            },
        ),
    ];
    for (body, want) in cases {
        let whole = run("b", limits, &[body]).1;
        let split: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(
            whole.as_ref(),
            Some(&want),
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(run("b", limits, &split).1, Some(want));
    }
}

#[test]
fn limits_are_inclusive() {
    let limits = Limits {
        max_preamble: 1,
        max_header_block: 7,
        max_headers: 1,
        max_json_part: 2,
    };
    let body = b"x\r\n--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--";
    let tight = Limits {
        max_header_block: 30,
        ..limits
    };
    assert!(matches!(
        run("b", limits, &[body]).1,
        Some(MultipartError::HeaderBlockTooLarge { .. })
    ));
    let chunks: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run("b", tight, &chunks).1, None);
    assert_eq!(run("b", tight, &[body]).1, None);
}

#[test]
fn malformed_header_lines_are_errors() {
    let cases: [&[u8]; 5] = [
        b"--b\r\nno colon\r\n\r\n",
        b"--b\r\n continuation\r\n\r\n",
        b"--b\r\n: empty name\r\n\r\n",
        b"--b\r\nA: bare\nLF\r\n\r\n",
        b"--b\r\nA: \xff\r\n\r\n",
    ];
    for body in cases {
        let err = one(body).1;
        assert!(
            matches!(err, Some(MultipartError::BadHeader { offset: 5, .. })),
            "{err:?}"
        );
    }
    let dup = b"--b\r\nContent-ID: <a>\r\nContent-ID: <b>\r\n\r\n";
    assert_eq!(
        one(dup).1,
        Some(MultipartError::DuplicateHeader {
            offset: 22,
            name: "Content-ID"
        })
    );
}

#[test]
fn garbage_after_boundary_is_an_error_and_sticks() {
    let mut parser = Parser::new("b", Limits::default()).expect("boundary");
    parser.push(b"--bX\r\n");
    let err = parser.next_piece();
    assert_eq!(
        err,
        Err(MultipartError::BadDelimiterLine {
            offset: 3,
            found: b'X'
        })
    );
    parser.push(b"more");
    assert_eq!(parser.next_piece(), err);
    assert_eq!(parser.buffered_len(), 0);
}

#[test]
fn epilogue_is_not_buffered() {
    let mut parser = Parser::new("b", Limits::default()).expect("boundary");
    parser.push(b"--b--");
    assert_eq!(parser.next_piece(), Ok(Some(Piece::End)));
    assert!(parser.is_done());
    parser.push(&[0u8; 4096]);
    assert_eq!(parser.buffered_len(), 0);
    assert_eq!(parser.next_piece(), Ok(None));
}

#[test]
fn binary_data_streams_before_the_part_ends() {
    let mut parser = Parser::new("bound", Limits::default()).expect("boundary");
    parser.push(b"--bound\r\nContent-ID: <x>\r\n\r\n");
    assert!(matches!(parser.next_piece(), Ok(Some(Piece::PartStart(_)))));
    parser.push(b"abcdef\r\n--bou");
    assert_eq!(parser.next_piece(), Ok(Some(data(b"abcdef"))));
    assert_eq!(parser.next_piece(), Ok(None));
    assert_eq!(
        parser.buffered_len(),
        7,
        "only the partial delimiter is held back"
    );
    parser.push(b"ncy");
    assert_eq!(parser.next_piece(), Ok(Some(data(b"\r\n--bouncy"))));
}

#[test]
fn bad_boundaries_are_refused() {
    for b in ["", " ends-with-space ", "new\r\nline", &"x".repeat(201)] {
        assert!(Parser::new(b, Limits::default()).is_err(), "{b:?}");
    }
}

#[test]
fn boundary_from_content_type_variants() {
    let ok = [
        (
            "multipart/related; boundary=abc; type=application/json",
            "abc",
        ),
        ("Multipart/Related;BOUNDARY=\"a b;c\"", "a b;c"),
        (
            "multipart/related; type=\"application/json\"; Boundary=\"q\\\"x\"",
            "q\"x",
        ),
        (
            "multipart/form-data; boundary=WhooHooZeerOoonie!",
            "WhooHooZeerOoonie!",
        ),
        (
            "multipart/related; boundary=------abcde123 ",
            "------abcde123",
        ),
    ];
    for (value, want) in ok {
        assert_eq!(
            boundary_from_content_type(value).as_deref(),
            Ok(want),
            "{value}"
        );
    }
    assert!(matches!(
        boundary_from_content_type("application/json"),
        Err(ContentTypeError::NotMultipart(_))
    ));
    assert_eq!(
        boundary_from_content_type("multipart/related; type=application/json"),
        Err(ContentTypeError::MissingBoundary)
    );
    assert!(matches!(
        boundary_from_content_type("multipart/related; boundary=\"open"),
        Err(ContentTypeError::MalformedParameters(_))
    ));
    assert!(matches!(
        boundary_from_content_type("multipart/related; boundary="),
        Err(ContentTypeError::InvalidBoundary(_))
    ));
}

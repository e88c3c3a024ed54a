//! The AVS codec from the outside: split invariance of the multipart parser
//! under property tests, round trips through the event writer, bounded
//! memory on a long attachment, and a whole Recognize response (protocol G.3).

use avs_proto::encode::FormData;
use avs_proto::message::{Event, KnownDirective, parse_directive};
use avs_proto::multipart::{Limits, MultipartError, Parser, Piece, boundary_from_content_type};
use proptest::prelude::*;

/// Events with adjacent `Data` merged, plus the error that stopped parsing.
type Outcome = (Vec<Piece>, Option<MultipartError>);

fn parse_chunks<'a>(boundary: &str, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut parser = Parser::new(boundary, Limits::default()).expect("valid boundary");
    let mut events: Vec<Piece> = Vec::new();
    let mut drain = |parser: &mut Parser| -> Option<MultipartError> {
        loop {
            match parser.next_piece() {
                Ok(Some(Piece::Data(d))) => match events.last_mut() {
                    Some(Piece::Data(prev)) => {
                        *prev = [prev.as_ref(), d.as_ref()].concat().into();
                    }
                    _ => events.push(Piece::Data(d)),
                },
                Ok(Some(other)) => events.push(other),
                Ok(None) => return None,
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

/// Cuts `body` into pieces whose sizes cycle through `sizes`.
fn split<'a>(body: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at((*size).clamp(1, rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

const BOUNDARY: &str = "----avs-b0undary";

/// A Recognize response in the shape of protocol G.3, with `attachment` as
/// the MP3 part and optional preamble and transport padding.
fn response_body(attachment: &[u8], preamble: &[u8], padding: &[u8]) -> Vec<u8> {
    let stop = br#"{"directive":{"header":{"namespace":"SpeechRecognizer","name":"StopCapture","messageId":"m1","dialogRequestId":"d1"},"payload":{}}}"#;
    let speak = br#"{"directive":{"header":{"namespace":"SpeechSynthesizer","name":"Speak","messageId":"m2","dialogRequestId":"d1"},"payload":{"url":"cid:TTS_123","format":"AUDIO_MPEG","token":"tok-1"}}}"#;
    let mut body = preamble.to_vec();
    for (headers, content) in [
        (&b"Content-Type: application/json"[..], &stop[..]),
        (b"Content-Type: application/json", speak),
        (
            b"Content-Type: application/octet-stream\r\nContent-ID: <TTS_123>",
            attachment,
        ),
    ] {
        body.extend_from_slice(b"\r\n--");
        body.extend_from_slice(BOUNDARY.as_bytes());
        body.extend_from_slice(padding);
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(headers);
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(content);
    }
    body.extend_from_slice(b"\r\n--");
    body.extend_from_slice(BOUNDARY.as_bytes());
    body.extend_from_slice(b"--\r\n");
    body
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Attachment bytes rich in near-delimiters: CRs, `\r\n--`, and prefixes of
/// the boundary, mixed with arbitrary bytes.
fn tricky_attachment() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r\n--".to_vec()),
        (0..BOUNDARY.len()).prop_map(|n| [b"\r\n--", &BOUNDARY.as_bytes()[..n]].concat()),
        Just(BOUNDARY.as_bytes().to_vec()),
    ];
    proptest::collection::vec(piece, 0..24)
        .prop_map(|pieces| pieces.concat())
        .prop_filter("attachment must not hold a real delimiter", |a| {
            !contains(a, format!("\r\n--{BOUNDARY}").as_bytes())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_split_gives_the_same_parts(
        attachment in tricky_attachment(),
        preamble in prop_oneof![Just(Vec::new()), Just(b"preamble text".to_vec())],
        padding in prop_oneof![Just(Vec::new()), Just(b" \t ".to_vec())],
        sizes in proptest::collection::vec(1usize..64, 1..16),
    ) {
        let body = response_body(&attachment, &preamble, &padding);
        let whole = parse_chunks(BOUNDARY, [body.as_slice()]);
        prop_assert_eq!(&whole.1, &None);
        // An empty part yields no Data event.
        let want_len = if attachment.is_empty() { 9 } else { 10 };
        prop_assert_eq!(whole.0.len(), want_len);
        if !attachment.is_empty() {
            prop_assert_eq!(&whole.0[7], &Piece::Data(attachment.clone().into()));
        }
        prop_assert_eq!(&parse_chunks(BOUNDARY, split(&body, &sizes)), &whole);
        prop_assert_eq!(&parse_chunks(BOUNDARY, body.chunks(1)), &whole);
    }

    #[test]
    fn encoded_events_round_trip_under_any_split(
        audio in proptest::collection::vec(any::<u8>(), 0..2000),
        token in "[ -~]{0,40}",
        sizes in proptest::collection::vec(1usize..400, 1..8),
    ) {
        let form = FormData::new();
        let metadata = Event::speech("SpeechStarted", &token).to_json();
        let mut body = form.head(&metadata).expect("head").to_vec();
        body.extend_from_slice(&form.audio_part_header());
        body.extend_from_slice(&audio);
        body.extend_from_slice(&form.tail());
        let (events, err) = parse_chunks(form.boundary(), split(&body, &sizes));
        prop_assert_eq!(err, None);
        prop_assert_eq!(&events[1], &Piece::Data(metadata.into_bytes().into()));
        if audio.is_empty() {
            prop_assert_eq!(events.len(), 6);
        } else {
            prop_assert_eq!(&events[4], &Piece::Data(audio.into()));
        }
    }

    #[test]
    fn damaged_bodies_fail_the_same_way_however_split(
        attachment in tricky_attachment(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        sizes in proptest::collection::vec(1usize..32, 1..8),
    ) {
        let mut body = response_body(&attachment, b"", b"");
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        let whole = parse_chunks(BOUNDARY, [body.as_slice()]);
        prop_assert_eq!(&parse_chunks(BOUNDARY, split(&body, &sizes)), &whole);
    }
}

#[test]
fn bodies_written_by_the_encoder_parse_back() {
    let form = FormData::new();
    let boundary = boundary_from_content_type(&form.content_type()).expect("form-data boundary");
    assert_eq!(boundary, form.boundary());
    let metadata = Event::recognize(
        "d1",
        "NEAR_FIELD",
        "AUDIO_L16_RATE_16000_CHANNELS_1",
        None,
        vec![],
    )
    .to_json();
    let audio: Vec<u8> = (0..3200u32).map(|i| (i * 7 % 251) as u8).collect();

    let mut body = form.head(&metadata).expect("head").to_vec();
    body.extend_from_slice(&form.audio_part_header());
    for chunk in audio.chunks(320) {
        body.extend_from_slice(chunk);
    }
    body.extend_from_slice(&form.tail());
    let (events, err) = parse_chunks(&boundary, split(&body, &[1, 7, 320, 13]));
    assert_eq!(err, None);
    let [
        Piece::PartStart(meta),
        Piece::Data(json),
        Piece::PartEnd,
        Piece::PartStart(au),
        Piece::Data(pcm),
        Piece::PartEnd,
        Piece::End,
    ] = events.as_slice()
    else {
        panic!("unexpected events {events:?}");
    };
    assert_eq!(meta.form_name().as_deref(), Some("metadata"));
    assert!(meta.is_json());
    assert_eq!(json.as_ref(), metadata.as_bytes());
    assert_eq!(au.form_name().as_deref(), Some("audio"));
    assert_eq!(au.content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(pcm.as_ref(), audio.as_slice());

    let whole = form
        .whole(&Event::new("System", "UserInactivityReport").to_json())
        .expect("whole");
    let (events, err) = parse_chunks(&boundary, [whole.as_ref()]);
    assert_eq!((events.len(), err), (4, None));
}

#[test]
fn a_recognize_response_yields_directives_and_their_attachment() {
    let body = response_body(b"ID3 mp3 bytes", b"", b"");
    let (events, err) = parse_chunks(BOUNDARY, body.chunks(5));
    assert_eq!(err, None);
    let mut speak_cid = None;
    let mut attachment_cid = None;
    let mut current = None;
    for event in &events {
        match event {
            Piece::PartStart(headers) => current = Some(headers.clone()),
            Piece::Data(data) if current.as_ref().is_some_and(|h| h.is_json()) => {
                let directive = parse_directive(data).expect("directive");
                if let Ok(KnownDirective::Speak(speak)) = directive.known() {
                    speak_cid = Some(speak.content_id());
                }
            }
            Piece::Data(data) => {
                assert_eq!(data.as_ref(), b"ID3 mp3 bytes");
                attachment_cid = current.as_ref().and_then(|h| h.content_id.clone());
            }
            _ => {}
        }
    }
    assert_eq!(speak_cid.as_deref(), Some("TTS_123"));
    assert_eq!(speak_cid, attachment_cid);
}

#[test]
fn a_50_mb_attachment_keeps_the_buffer_bounded() {
    const TOTAL: usize = 50 * 1024 * 1024;
    const CHUNK: usize = 4096;
    let delimiter_len = BOUNDARY.len() + 4;
    let mut parser = Parser::new(BOUNDARY, Limits::default()).expect("boundary");
    parser.push(format!("--{BOUNDARY}\r\nContent-ID: <big>\r\n\r\n").as_bytes());
    assert!(matches!(parser.next_piece(), Ok(Some(Piece::PartStart(_)))));
    // Every chunk ends in a partial delimiter, the worst case for hold-back.
    let mut chunk = vec![0x55u8; CHUNK];
    let tail = format!("\r\n--{}", &BOUNDARY[..BOUNDARY.len() - 1]);
    chunk[CHUNK - tail.len()..].copy_from_slice(tail.as_bytes());
    let mut received = 0usize;
    let mut max_buffered = 0usize;
    for _ in 0..TOTAL / CHUNK {
        parser.push(&chunk);
        max_buffered = max_buffered.max(parser.buffered_len());
        while let Some(event) = parser.next_piece().expect("no error") {
            let Piece::Data(data) = event else {
                panic!("unexpected {event:?}")
            };
            received += data.len();
        }
        assert!(
            parser.buffered_len() < delimiter_len,
            "held back {}",
            parser.buffered_len()
        );
    }
    assert!(max_buffered < CHUNK + delimiter_len, "peak {max_buffered}");
    parser.push(format!("\r\n--{BOUNDARY}--").as_bytes());
    while let Some(event) = parser.next_piece().expect("no error") {
        if let Piece::Data(data) = event {
            received += data.len();
        }
    }
    assert!(parser.is_done());
    assert_eq!(received, TOTAL);
}

use crate::encode::{EncodeError, FormData};

#[test]
fn whole_body_is_protocol_c5_byte_for_byte() {
    let form = FormData::with_boundary("BOUNDARY").expect("valid");
    assert_eq!(
        form.content_type(),
        "multipart/form-data; boundary=BOUNDARY"
    );
    let body = form
        .whole("{\"event\":{}}")
        .expect("no boundary in metadata");
    let want = "--BOUNDARY\r\n\
Content-Disposition: form-data; name=\"metadata\"\r\n\
Content-Type: application/json; charset=UTF-8\r\n\
\r\n\
{\"event\":{}}\r\n\
--BOUNDARY--\r\n";
    assert_eq!(std::str::from_utf8(&body), Ok(want));
}

#[test]
fn audio_pieces_are_protocol_c5_byte_for_byte() {
    let form = FormData::with_boundary("BOUNDARY").expect("valid");
    let mut body = form.head("{}").expect("ok").to_vec();
    body.extend_from_slice(&form.audio_part_header());
    body.extend_from_slice(b"PCM");
    body.extend_from_slice(&form.tail());
    let want = "--BOUNDARY\r\n\
Content-Disposition: form-data; name=\"metadata\"\r\n\
Content-Type: application/json; charset=UTF-8\r\n\
\r\n\
{}\r\n\
--BOUNDARY\r\n\
Content-Disposition: form-data; name=\"audio\"\r\n\
Content-Type: application/octet-stream\r\n\
\r\n\
PCM\r\n\
--BOUNDARY--\r\n";
    assert_eq!(String::from_utf8_lossy(&body), want);
}

#[test]
fn random_boundaries_differ_and_are_checked_against_metadata() {
    let a = FormData::new();
    let b = FormData::new();
    assert_ne!(a.boundary(), b.boundary());
    assert!(a.boundary().len() > 30);
    let hostile = format!("{{\"x\":\"{}\"}}", a.boundary());
    assert_eq!(
        a.whole(&hostile),
        Err(EncodeError::BoundaryInMetadata(a.boundary().to_owned()))
    );
    assert!(FormData::with_boundary("").is_err());
    assert!(FormData::with_boundary("a\r\nb").is_err());
}

//! The `multipart/related` bodies AVS answers with (protocol brief §C.6).
//!
//! Each part is written together with the delimiter that ends it
//! (`…body CRLF --boundary`), and the line end of that delimiter goes out
//! with the next part. A parser can only know a part is complete once it
//! sees the delimiter after it, so this way a directive on the never-ending
//! downchannel is usable as soon as it arrives, not when the next one does.

use bytes::{BufMut, Bytes, BytesMut};

/// The writer of one body; one boundary per body.
#[derive(Debug, Clone)]
pub(super) struct Related {
    boundary: String,
}

impl Related {
    /// A writer with a fresh random boundary.
    pub(super) fn new() -> Self {
        Self {
            boundary: format!("avs-sim-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The response's `content-type`.
    pub(super) fn content_type(&self) -> String {
        format!(
            "multipart/related; boundary={}; type=application/json",
            self.boundary
        )
    }

    /// The first delimiter, without its line end.
    pub(super) fn open(&self) -> Bytes {
        Bytes::from(format!("--{}", self.boundary))
    }

    /// A JSON part (one `{"directive":…}`) and its closing delimiter.
    pub(super) fn json(&self, json: &[u8]) -> Bytes {
        self.part("Content-Type: application/json; charset=UTF-8\r\n", json)
    }

    /// A binary attachment named by `content_id` (without angle brackets).
    pub(super) fn binary(&self, content_id: &str, data: &[u8]) -> Bytes {
        let headers =
            format!("Content-Type: application/octet-stream\r\nContent-ID: <{content_id}>\r\n");
        self.part(&headers, data)
    }

    /// Ends the body (after the last part's delimiter).
    pub(super) fn close(&self) -> Bytes {
        Bytes::from_static(b"--\r\n")
    }

    fn part(&self, headers: &str, body: &[u8]) -> Bytes {
        let mut out =
            BytesMut::with_capacity(headers.len() + body.len() + 16 + self.boundary.len());
        out.put_slice(b"\r\n");
        out.put_slice(headers.as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(body);
        out.put_slice(b"\r\n--");
        out.put_slice(self.boundary.as_bytes());
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avs_proto::multipart::{Limits, Parser, Piece, boundary_from_content_type};

    #[test]
    fn parts_parse_back_and_each_is_complete_on_arrival() {
        let w = Related::new();
        let boundary = boundary_from_content_type(&w.content_type()).unwrap();
        let mut p = Parser::new(&boundary, Limits::default()).unwrap();
        p.push(&w.open());
        p.push(&w.json(br#"{"directive":{}}"#));
        let mut seen = Vec::new();
        while let Some(e) = p.next_piece().unwrap() {
            seen.push(e);
        }
        // The JSON part is complete before anything else was written.
        assert!(matches!(seen.last(), Some(Piece::PartEnd)), "{seen:?}");
        p.push(&w.binary("cid-1", b"\x00\x01mp3"));
        p.push(&w.close());
        let mut rest = Vec::new();
        while let Some(e) = p.next_piece().unwrap() {
            rest.push(e);
        }
        match &rest[0] {
            Piece::PartStart(h) => assert_eq!(h.content_id.as_deref(), Some("cid-1")),
            other => panic!("{other:?}"),
        }
        assert_eq!(rest[1], Piece::Data(Bytes::from_static(b"\x00\x01mp3")));
        assert_eq!(rest[2..], [Piece::PartEnd, Piece::End]);
    }
}

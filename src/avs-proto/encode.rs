//! The `multipart/form-data` body of an event request (protocol §C.5), as
//! pieces of `Bytes` the h2 sender writes in order:
//!
//! - without audio: [`FormData::whole`];
//! - with audio: [`FormData::head`], [`FormData::audio_part_header`], the
//!   audio chunks as they are captured, then [`FormData::tail`].
//!
//! The audio part is streamed because AVS may answer (StopCapture) while
//! the upload is still open; nothing here waits for the end of the audio.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::mime::validate_boundary;

const METADATA_HEADERS: &[u8] = b"Content-Disposition: form-data; name=\"metadata\"\r\n\
Content-Type: application/json; charset=UTF-8\r\n\r\n";
const AUDIO_HEADERS: &[u8] = b"Content-Disposition: form-data; name=\"audio\"\r\n\
Content-Type: application/octet-stream\r\n\r\n";

/// Why a body could not be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The boundary given to [`FormData::with_boundary`] is unusable.
    #[error("invalid boundary {boundary:?}: {reason}")]
    InvalidBoundary {
        /// The boundary.
        boundary: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The metadata contains the boundary, which would cut the body short.
    #[error("the metadata JSON contains the boundary {0:?}")]
    BoundaryInMetadata(String),
}

/// The writer of one request body; make a new one per request.
#[derive(Debug, Clone)]
pub struct FormData {
    boundary: String,
}

impl Default for FormData {
    fn default() -> Self {
        Self::new()
    }
}

impl FormData {
    /// A writer with a random boundary. 122 random bits make an accidental
    /// match inside the streamed audio, which cannot be checked ahead of
    /// time, vanishingly unlikely; the metadata is checked anyway.
    pub fn new() -> Self {
        Self {
            boundary: format!("avsd-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// A writer with a fixed boundary, for tests and the AVS stand-in.
    pub fn with_boundary(boundary: &str) -> Result<Self, EncodeError> {
        validate_boundary(boundary).map_err(|err| EncodeError::InvalidBoundary {
            boundary: boundary.to_owned(),
            reason: err.to_string(),
        })?;
        Ok(Self {
            boundary: boundary.to_owned(),
        })
    }

    /// The boundary in use.
    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// The request's `content-type` header value.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The opening delimiter and the `metadata` part, up to and including
    /// the CRLF that precedes the next delimiter.
    pub fn head(&self, metadata: &str) -> Result<Bytes, EncodeError> {
        if metadata.contains(&self.boundary) {
            return Err(EncodeError::BoundaryInMetadata(self.boundary.clone()));
        }
        let mut out = BytesMut::with_capacity(metadata.len() + 160);
        self.put_dash_boundary(&mut out);
        out.put_slice(b"\r\n");
        out.put_slice(METADATA_HEADERS);
        out.put_slice(metadata.as_bytes());
        out.put_slice(b"\r\n");
        Ok(out.freeze())
    }

    /// The delimiter and headers of the `audio` part; raw audio follows.
    pub fn audio_part_header(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.boundary.len() + 100);
        self.put_dash_boundary(&mut out);
        out.put_slice(b"\r\n");
        out.put_slice(AUDIO_HEADERS);
        out.freeze()
    }

    /// Ends the audio part and the body.
    pub fn tail(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.boundary.len() + 8);
        out.put_slice(b"\r\n");
        self.put_close(&mut out);
        out.freeze()
    }

    /// A whole body for an event without audio.
    pub fn whole(&self, metadata: &str) -> Result<Bytes, EncodeError> {
        let head = self.head(metadata)?;
        let mut out = BytesMut::with_capacity(head.len() + self.boundary.len() + 6);
        out.put_slice(&head);
        self.put_close(&mut out);
        Ok(out.freeze())
    }

    fn put_dash_boundary(&self, out: &mut BytesMut) {
        out.put_slice(b"--");
        out.put_slice(self.boundary.as_bytes());
    }

    fn put_close(&self, out: &mut BytesMut) {
        self.put_dash_boundary(out);
        out.put_slice(b"--\r\n");
    }
}

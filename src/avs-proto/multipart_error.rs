//! The limits the multipart parser enforces and the errors it reports when
//! a body breaks a rule. Offsets count bytes from the start of the body and
//! point at the start of the offending element, so the same bytes give the
//! same error however they were split into chunks.

use thiserror::Error;

use crate::mime::ContentTypeError;

/// Bounds on what the parser buffers before it can hand anything out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes tolerated before the first delimiter (RFC 2046 preamble).
    pub max_preamble: usize,
    /// Bytes of one part's header block, and of transport padding after a
    /// boundary.
    pub max_header_block: usize,
    /// Header fields in one part.
    pub max_headers: usize,
    /// Bytes of one `application/json` part, which is collected whole.
    pub max_json_part: usize,
}

impl Default for Limits {
    /// Generous for AVS, whose parts carry two or three headers and whose
    /// directives are a few kilobytes, yet small enough for a Pi.
    fn default() -> Self {
        Self {
            max_preamble: 16 * 1024,
            max_header_block: 8 * 1024,
            max_headers: 32,
            max_json_part: 256 * 1024,
        }
    }
}

/// A rule the body broke; `offset` counts bytes from the start of the body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MultipartError {
    /// The boundary given to [`Parser::new`](super::multipart::Parser::new) is unusable.
    #[error(transparent)]
    Boundary(#[from] ContentTypeError),
    /// No delimiter within the allowed preamble.
    #[error("no delimiter within the first {limit} bytes")]
    PreambleTooLong {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A delimiter line with something other than `--`, padding or CRLF
    /// after the boundary (the boundary then appeared inside a part).
    #[error("unexpected byte {found:#04x} after a boundary at offset {offset}")]
    BadDelimiterLine {
        /// Offset of the unexpected byte.
        offset: u64,
        /// The byte found there.
        found: u8,
    },
    /// Whitespace after a boundary that goes on past the header-block limit.
    #[error("transport padding at offset {offset} is longer than {limit} bytes")]
    PaddingTooLong {
        /// Offset where the padding starts.
        offset: u64,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A header block without its empty line within the limit.
    #[error("header block at offset {offset} is longer than {limit} bytes")]
    HeaderBlockTooLarge {
        /// Offset where the header block starts.
        offset: u64,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// More header fields than [`Limits::max_headers`].
    #[error("header block at offset {offset} has more than {limit} fields")]
    TooManyHeaders {
        /// Offset where the header block starts.
        offset: u64,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A header line that is not `name: value`.
    #[error("malformed header line at offset {offset}: {reason}")]
    BadHeader {
        /// Offset where the line starts.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `Content-Type` or `Content-ID` given twice in one part.
    #[error("duplicate {name} header at offset {offset}")]
    DuplicateHeader {
        /// Offset where the second occurrence starts.
        offset: u64,
        /// Which header.
        name: &'static str,
    },
    /// A JSON part larger than [`Limits::max_json_part`].
    #[error("JSON part at offset {offset} is longer than {limit} bytes")]
    JsonPartTooLarge {
        /// Offset where the part's body starts.
        offset: u64,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// [`Parser::finish`](super::multipart::Parser::finish) was called before the closing delimiter.
    #[error("body ended at offset {offset} {during}")]
    UnexpectedEof {
        /// Total bytes received.
        offset: u64,
        /// Where in the grammar the body stopped.
        during: &'static str,
    },
}

/// Where [`MultipartError::UnexpectedEof`] says a body stopped when it
/// held no delimiter at all: no part, not even a closing one.
pub(super) const BEFORE_FIRST_DELIMITER: &str = "before the first delimiter";

impl MultipartError {
    /// True when the body ended without a single delimiter: an empty body
    /// (AVS answers some events 200 with nothing in it) rather than a
    /// broken one.
    pub fn ended_before_any_part(&self) -> bool {
        matches!(self, Self::UnexpectedEof { during, .. } if *during == BEFORE_FIRST_DELIMITER)
    }
}

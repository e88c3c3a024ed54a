//! A push-driven (sans-I/O) parser for the `multipart/related` bodies AVS
//! sends: event responses and the never-ending downchannel. It also reads
//! `multipart/form-data` (the event bodies avsd writes), which the stand-in
//! for AVS needs.
//!
//! Why not `multer`: it does expose part headers (`Field::headers`, so
//! Content-ID is reachable) and streams part bodies (`Field::chunk`), but it
//! does not fit the downchannel:
//! - it reads a part's header block with "read until CRLFCRLF" and a preamble
//!   with "read until the boundary" with no limit of their own; the only cap
//!   is a whole-stream size limit, which a connection that lives for an hour
//!   cannot use, so one peer sending a header line without end grows memory
//!   without bound;
//! - its per-field size limits are keyed by the form-data `name` from
//!   `Content-Disposition`, which multipart/related parts do not have, so a
//!   cap on JSON directives would also cap the MP3 attachments;
//! - it owns an async `Stream` and lends one `Field` at a time, whereas the
//!   connection task wants to hand over each h2 DATA frame as it comes and
//!   the property tests and the fuzzer want to drive the parser with plain
//!   byte slices split at arbitrary points.
//!
//! Contract: `push` a chunk, then call `next_piece` until it returns
//! `Ok(None)`, then push the next chunk. Held that way, the parser keeps at
//! most one chunk plus a delimiter's length of bytes (plus, inside a JSON
//! part or a header block, what its limit allows). Binary parts come out as
//! `Data` events while they arrive, so playback of an MP3 attachment can start
//! before its end; a JSON part comes out as one `Data` event holding all of
//! it. Errors name the rule and the stream offset where the offending element
//! starts, so the same bytes give the same error however they were split.

pub use crate::mime::{ContentTypeError, PartHeaders, boundary_from_content_type};
use crate::mime::{HeaderFault, parse_header_block, validate_boundary};
use crate::multipart_error::BEFORE_FIRST_DELIMITER;
pub use crate::multipart_error::{Limits, MultipartError};
use bytes::{Buf, Bytes, BytesMut};

/// What the parser found next in the body (named apart from the AVS
/// `message::Event` a device sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A part begins; its headers are complete.
    PartStart(PartHeaders),
    /// Body bytes of the current part: several events for a binary part, as
    /// they arrive; exactly one (if the part is not empty) for a JSON part.
    Data(Bytes),
    /// The current part is complete.
    PartEnd,
    /// The closing delimiter: the body is complete and the rest is ignored.
    End,
}

#[derive(Debug, Clone)]
enum State {
    Preamble,
    /// Just past `--boundary`; `padding` counts whitespace seen since.
    AfterBoundary {
        padding: usize,
        padding_start: u64,
    },
    Headers,
    Body {
        json: bool,
        start: u64,
    },
    Done,
    Failed(MultipartError),
}

/// A streaming multipart parser; see the module comment for its contract.
#[derive(Debug)]
pub struct Parser {
    /// `CRLF--boundary`: the delimiter inside the body.
    delimiter: Vec<u8>,
    limits: Limits,
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    offset: u64,
    /// Where in `buf` the next search may start: earlier bytes were already
    /// ruled out, and rescanning them would make 1-byte chunks quadratic.
    scan_from: usize,
    state: State,
    eof: bool,
}

impl Parser {
    /// A parser for a body whose `Content-Type` carried `boundary`.
    pub fn new(boundary: &str, limits: Limits) -> Result<Self, MultipartError> {
        validate_boundary(boundary)?;
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Ok(Self {
            delimiter,
            limits,
            buf: BytesMut::new(),
            offset: 0,
            scan_from: 0,
            state: State::Preamble,
            eof: false,
        })
    }

    /// Hands the parser the next bytes of the body, e.g. one h2 DATA frame.
    /// Bytes after the closing delimiter (the epilogue) are dropped.
    pub fn push(&mut self, chunk: &[u8]) {
        if !matches!(self.state, State::Done | State::Failed(_)) {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// Marks the end of the body: from now on, running out of bytes before
    /// the closing delimiter is an [`MultipartError::UnexpectedEof`].
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// Bytes held inside the parser, to check that memory stays bounded.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// True once the closing delimiter has been seen.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next event, `Ok(None)` if more bytes are needed (or the body is
    /// complete). After an error every call returns that error again.
    pub fn next_piece(&mut self) -> Result<Option<Piece>, MultipartError> {
        let step = match &self.state {
            State::Failed(err) => return Err(err.clone()),
            State::Done => return Ok(None),
            State::Preamble => self.preamble(),
            State::AfterBoundary {
                padding,
                padding_start,
            } => self.after_boundary(*padding, *padding_start),
            State::Headers => self.headers(),
            State::Body { json, start } => self.body(*json, *start),
        };
        let result = match step {
            Ok(Some(event)) => Ok(Some(event)),
            Ok(None) if self.eof => Err(MultipartError::UnexpectedEof {
                offset: self.offset + self.buf.len() as u64,
                during: self.state_name(),
            }),
            other => other,
        };
        if let Err(err) = &result {
            self.state = State::Failed(err.clone());
            self.buf = BytesMut::new();
        }
        result
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            State::Preamble => BEFORE_FIRST_DELIMITER,
            State::AfterBoundary { .. } => "in a delimiter line",
            State::Headers => "in a part's headers",
            State::Body { .. } => "in a part's body",
            State::Done | State::Failed(_) => "after the end",
        }
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.advance(n);
        self.offset += n as u64;
        self.scan_from = 0;
    }

    fn find_delimiter(&self) -> Option<usize> {
        let haystack = self.buf.get(self.scan_from..)?;
        memchr::memmem::find(haystack, &self.delimiter).map(|i| i + self.scan_from)
    }

    /// Where the search may resume next time: any match must end past the
    /// current data, so it cannot start before the last `len - 1` bytes.
    fn rescan_point(&self, pattern_len: usize) -> usize {
        self.buf.len().saturating_sub(pattern_len.saturating_sub(1))
    }

    fn preamble(&mut self) -> Result<Option<Piece>, MultipartError> {
        // The first delimiter may open the body without its CRLF.
        let open = self.delimiter.get(2..).unwrap_or_default();
        if self.offset == 0 {
            if self.buf.starts_with(open) {
                self.consume(open.len());
                self.enter_after_boundary();
                return self.after_boundary(0, self.offset);
            }
            if open.starts_with(&self.buf) {
                return Ok(None);
            }
        }
        let limit = self.limits.max_preamble;
        if let Some(i) = self.find_delimiter() {
            if self.offset + i as u64 > limit as u64 {
                return Err(MultipartError::PreambleTooLong { limit });
            }
            self.consume(i + self.delimiter.len());
            self.enter_after_boundary();
            return self.after_boundary(0, self.offset);
        }
        let discard = self.rescan_point(self.delimiter.len());
        self.consume(discard);
        if self.offset > limit as u64 {
            return Err(MultipartError::PreambleTooLong { limit });
        }
        Ok(None)
    }

    fn enter_after_boundary(&mut self) {
        self.state = State::AfterBoundary {
            padding: 0,
            padding_start: self.offset,
        };
    }

    fn after_boundary(
        &mut self,
        mut padding: usize,
        padding_start: u64,
    ) -> Result<Option<Piece>, MultipartError> {
        let bad = |offset: u64, found: u8| MultipartError::BadDelimiterLine { offset, found };
        if padding == 0 && self.buf.first() == Some(&b'-') {
            return match self.buf.get(1) {
                None => Ok(None),
                Some(b'-') => {
                    self.consume(2);
                    self.state = State::Done;
                    self.buf = BytesMut::new();
                    Ok(Some(Piece::End))
                }
                Some(&other) => Err(bad(self.offset + 1, other)),
            };
        }
        let spaces = self
            .buf
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        padding += spaces;
        self.consume(spaces);
        let limit = self.limits.max_header_block;
        if padding > limit {
            return Err(MultipartError::PaddingTooLong {
                offset: padding_start,
                limit,
            });
        }
        self.state = State::AfterBoundary {
            padding,
            padding_start,
        };
        match (self.buf.first(), self.buf.get(1)) {
            (None, _) | (Some(b'\r'), None) => Ok(None),
            (Some(b'\r'), Some(b'\n')) => {
                self.consume(2);
                self.state = State::Headers;
                self.headers()
            }
            (Some(b'\r'), Some(&other)) => Err(bad(self.offset + 1, other)),
            (Some(&other), _) => Err(bad(self.offset, other)),
        }
    }

    fn headers(&mut self) -> Result<Option<Piece>, MultipartError> {
        let start = self.offset;
        let limit = self.limits.max_header_block;
        let (block_len, skip) = if self.buf.starts_with(b"\r\n") {
            (0, 2)
        } else if self.buf.as_ref() == b"\r" {
            return Ok(None);
        } else {
            let haystack = self.buf.get(self.scan_from..).unwrap_or_default();
            match memchr::memmem::find(haystack, b"\r\n\r\n") {
                Some(i) => (i + self.scan_from, 4),
                None => {
                    // Tested against limit + 3 so that a block of exactly
                    // `limit` bytes is accepted however its CRLFCRLF is split.
                    if self.buf.len() > limit + 3 {
                        return Err(MultipartError::HeaderBlockTooLarge {
                            offset: start,
                            limit,
                        });
                    }
                    self.scan_from = self.rescan_point(4);
                    return Ok(None);
                }
            }
        };
        if block_len > limit {
            return Err(MultipartError::HeaderBlockTooLarge {
                offset: start,
                limit,
            });
        }
        let block = self.buf.get(..block_len).unwrap_or_default();
        let headers =
            parse_header_block(block, self.limits.max_headers).map_err(|fault| match fault {
                HeaderFault::TooMany => MultipartError::TooManyHeaders {
                    offset: start,
                    limit: self.limits.max_headers,
                },
                HeaderFault::BadLine(at, reason) => MultipartError::BadHeader {
                    offset: start + at as u64,
                    reason,
                },
                HeaderFault::Duplicate(at, name) => MultipartError::DuplicateHeader {
                    offset: start + at as u64,
                    name,
                },
            })?;
        self.consume(block_len + skip);
        self.state = State::Body {
            json: headers.is_json(),
            start: self.offset,
        };
        Ok(Some(Piece::PartStart(headers)))
    }

    fn body(&mut self, json: bool, start: u64) -> Result<Option<Piece>, MultipartError> {
        let limit = self.limits.max_json_part;
        let too_large = MultipartError::JsonPartTooLarge {
            offset: start,
            limit,
        };
        match self.find_delimiter() {
            Some(0) => {
                self.consume(self.delimiter.len());
                self.enter_after_boundary();
                Ok(Some(Piece::PartEnd))
            }
            Some(i) => {
                if json && i > limit {
                    return Err(too_large);
                }
                Ok(Some(self.take_data(i)))
            }
            None if json => {
                // As with headers: the slack keeps the verdict independent
                // of where the chunks were cut.
                if self.buf.len() > limit + self.delimiter.len() - 1 {
                    return Err(too_large);
                }
                self.scan_from = self.rescan_point(self.delimiter.len());
                Ok(None)
            }
            None => {
                let keep = self.partial_delimiter_suffix();
                let emit = self.buf.len() - keep;
                if emit == 0 {
                    return Ok(None);
                }
                Ok(Some(self.take_data(emit)))
            }
        }
    }

    fn take_data(&mut self, n: usize) -> Piece {
        let data = self.buf.split_to(n).freeze();
        self.offset += n as u64;
        self.scan_from = 0;
        Piece::Data(data)
    }

    /// Length of the longest tail of `buf` that could be the start of a
    /// delimiter; those bytes must wait for the next chunk.
    fn partial_delimiter_suffix(&self) -> usize {
        let len = self.buf.len();
        let from = len.saturating_sub(self.delimiter.len() - 1);
        (from..len)
            .find(|&i| {
                self.buf
                    .get(i..)
                    .is_some_and(|tail| self.delimiter.starts_with(tail))
            })
            .map_or(0, |i| len - i)
    }
}

//! MIME header pieces the multipart parser needs: the boundary parameter of
//! a `Content-Type` header value, and the header block of one part.
//!
//! Kept apart from the parser's state machine so that each stays readable.

use thiserror::Error;

/// The longest boundary accepted. RFC 2046 allows 70 characters; a little
/// more is tolerated because servers are not always strict, and the bound
/// exists only to keep the parser's held-back tail small.
pub const MAX_BOUNDARY_LEN: usize = 200;

/// Why a `Content-Type` value did not yield a usable multipart boundary.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContentTypeError {
    /// The media type is not `multipart/*` (AVS answers an event with plain
    /// JSON when it throws an exception, so the caller must look for this).
    #[error("content type {0:?} is not multipart")]
    NotMultipart(String),
    /// A `multipart/*` type without a `boundary` parameter.
    #[error("content type has no boundary parameter")]
    MissingBoundary,
    /// A parameter list that cannot be read (unbalanced quotes, no `=`).
    #[error("malformed content type parameters: {0}")]
    MalformedParameters(&'static str),
    /// The boundary is empty, too long or has characters a delimiter line
    /// cannot carry.
    #[error("invalid multipart boundary: {0}")]
    InvalidBoundary(&'static str),
}

/// Takes the boundary out of a `multipart/related` (or any `multipart/*`)
/// `Content-Type` value, e.g. `multipart/related; boundary="b"; type=application/json`.
///
/// Parameter names are matched without regard to case; values may be quoted
/// (with backslash escapes) or bare tokens.
pub fn boundary_from_content_type(value: &str) -> Result<String, ContentTypeError> {
    let (media_type, params) = match value.split_once(';') {
        Some((media, rest)) => (media.trim(), rest),
        None => (value.trim(), ""),
    };
    let is_multipart = media_type
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"));
    if !is_multipart {
        return Err(ContentTypeError::NotMultipart(media_type.to_owned()));
    }
    let mut boundary = None;
    for (name, val) in parse_parameters(params)? {
        if name.eq_ignore_ascii_case("boundary") && boundary.is_none() {
            boundary = Some(val);
        }
    }
    let boundary = boundary.ok_or(ContentTypeError::MissingBoundary)?;
    validate_boundary(&boundary)?;
    Ok(boundary)
}

/// Checks that `boundary` can stand in a delimiter line: 1 to
/// [`MAX_BOUNDARY_LEN`] printable ASCII characters, not ending in a space.
pub fn validate_boundary(boundary: &str) -> Result<(), ContentTypeError> {
    if boundary.is_empty() {
        return Err(ContentTypeError::InvalidBoundary("empty"));
    }
    if boundary.len() > MAX_BOUNDARY_LEN {
        return Err(ContentTypeError::InvalidBoundary("longer than 200 bytes"));
    }
    if !boundary.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ContentTypeError::InvalidBoundary("not printable ASCII"));
    }
    if boundary.ends_with(' ') {
        return Err(ContentTypeError::InvalidBoundary("ends with a space"));
    }
    Ok(())
}

/// Splits `; a=b; c="d;e"` into name/value pairs, unquoting values.
fn parse_parameters(mut rest: &str) -> Result<Vec<(String, String)>, ContentTypeError> {
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return Ok(out);
        }
        let (name, after) = rest
            .split_once('=')
            .ok_or(ContentTypeError::MalformedParameters(
                "parameter without '='",
            ))?;
        let name = name.trim().to_owned();
        let after = after.trim_start();
        if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, escaped)) => value.push(escaped),
                        None => break,
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    other => value.push(other),
                }
            }
            let end = end.ok_or(ContentTypeError::MalformedParameters("unterminated quote"))?;
            rest = quoted.get(end..).unwrap_or("");
            out.push((name, value));
        } else {
            let (value, tail) = after.split_once(';').unwrap_or((after, ""));
            out.push((name, value.trim().to_owned()));
            rest = tail;
        }
    }
}

/// The headers of one body part, as the parser hands them out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHeaders {
    /// `Content-Type`, verbatim (parameters included).
    pub content_type: Option<String>,
    /// `Content-ID` with its angle brackets removed (RFC 2392), so it can be
    /// compared with the part after `cid:` in a directive's `url`.
    pub content_id: Option<String>,
    /// Every other header, in order, with names as sent.
    pub other: Vec<(String, String)>,
}

impl PartHeaders {
    /// True for `application/json` parts, which hold one directive each and
    /// are therefore collected whole (under a size limit) by the parser.
    pub fn is_json(&self) -> bool {
        self.content_type.as_deref().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
        })
    }

    /// The first header called `name` (ignoring case), including
    /// `Content-Type` and `Content-ID` (the latter without brackets).
    pub fn get(&self, name: &str) -> Option<&str> {
        if name.eq_ignore_ascii_case("content-type") {
            return self.content_type.as_deref();
        }
        if name.eq_ignore_ascii_case("content-id") {
            return self.content_id.as_deref();
        }
        self.other
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `name` parameter of a `Content-Disposition: form-data` header:
    /// `metadata` or `audio` in an event body.
    pub fn form_name(&self) -> Option<String> {
        let value = self.get("content-disposition")?;
        let (_, params) = value.split_once(';')?;
        parse_parameters(params)
            .ok()?
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("name"))
            .map(|(_, v)| v)
    }
}

/// A rule a part's header block broke, with the offset of the bad line
/// relative to the start of the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderFault {
    /// More header fields than the limit allows.
    TooMany,
    /// A line that is not `name: value` or a continuation of one.
    BadLine(usize, &'static str),
    /// `Content-Type` or `Content-ID` given twice: which part an attachment
    /// is would then be ambiguous.
    Duplicate(usize, &'static str),
}

/// Parses a header block (without its final empty line) into [`PartHeaders`].
pub(crate) fn parse_header_block(
    block: &[u8],
    max_headers: usize,
) -> Result<PartHeaders, HeaderFault> {
    let mut fields: Vec<(usize, String, String)> = Vec::new();
    let mut offset = 0usize;
    for line in crlf_lines(block) {
        let at = offset;
        offset += line.len() + 2;
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return Err(HeaderFault::BadLine(at, "bare CR or LF"));
        }
        let text = std::str::from_utf8(line).map_err(|_| HeaderFault::BadLine(at, "not UTF-8"))?;
        if text.starts_with([' ', '\t']) {
            // A folded continuation (RFC 5322 obs-fold): part of the previous value.
            let (_, _, value) = fields
                .last_mut()
                .ok_or(HeaderFault::BadLine(at, "continuation before any header"))?;
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(text.trim());
            continue;
        }
        let (name, value) = text
            .split_once(':')
            .ok_or(HeaderFault::BadLine(at, "no ':' in header line"))?;
        let name = name.trim_end();
        let valid_name =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !valid_name {
            return Err(HeaderFault::BadLine(at, "invalid header name"));
        }
        if fields.len() >= max_headers {
            return Err(HeaderFault::TooMany);
        }
        fields.push((at, name.to_owned(), value.trim().to_owned()));
    }
    let mut headers = PartHeaders::default();
    for (at, name, value) in fields {
        if name.eq_ignore_ascii_case("content-type") {
            if headers.content_type.is_some() {
                return Err(HeaderFault::Duplicate(at, "Content-Type"));
            }
            headers.content_type = Some(value);
        } else if name.eq_ignore_ascii_case("content-id") {
            if headers.content_id.is_some() {
                return Err(HeaderFault::Duplicate(at, "Content-ID"));
            }
            headers.content_id = Some(strip_angle_brackets(&value).to_owned());
        } else {
            headers.other.push((name, value));
        }
    }
    Ok(headers)
}

/// `<id>` → `id`; an id sent without brackets is kept as it is.
fn strip_angle_brackets(value: &str) -> &str {
    value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(value)
}

/// Splitting on CRLF only: a bare LF inside a line must stay visible so it
/// can be rejected rather than silently treated as a line break.
fn crlf_lines(block: &[u8]) -> CrlfLines<'_> {
    CrlfLines { rest: Some(block) }
}

struct CrlfLines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // The parser cuts the block before its final CRLF, so an empty
        // remainder is the end, not an empty line.
        let rest = self.rest.filter(|r| !r.is_empty())?;
        match memchr::memmem::find(rest, b"\r\n") {
            Some(i) => {
                self.rest = rest.get(i + 2..);
                rest.get(..i)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

//! ICY (SHOUTcast/Icecast) metadata: asked for with `Icy-MetaData: 1`, the
//! server says `icy-metaint: N` and then puts a metadata block after every N
//! audio bytes: one length byte L, then L × 16 bytes of text such as
//! `StreamTitle='Artist - Title';StreamUrl='…';`, padded with NULs. A
//! [`Demuxer`] takes the body as it arrives and hands back the audio alone
//! and each block's StreamTitle.

use bytes::{Bytes, BytesMut};

/// The largest metadata block a length byte can announce.
const MAX_BLOCK: usize = 255 * 16;

/// Splits an ICY body into audio and metadata.
#[derive(Debug)]
pub struct Demuxer {
    metaint: usize,
    /// Audio bytes left before the next length byte.
    audio_left: usize,
    /// The metadata block being read and how long it is.
    block: BytesMut,
    block_len: Option<usize>,
}

impl Demuxer {
    /// For a stream whose `icy-metaint` is `metaint` (> 0).
    pub fn new(metaint: usize) -> Self {
        Self {
            metaint,
            audio_left: metaint,
            block: BytesMut::new(),
            block_len: None,
        }
    }

    /// Takes the next piece of the body: appends its audio parts to
    /// `audio` and returns the StreamTitle of each block that ended in it.
    pub fn feed(&mut self, mut data: Bytes, audio: &mut Vec<Bytes>) -> Vec<String> {
        let mut titles = Vec::new();
        while !data.is_empty() {
            if self.audio_left > 0 {
                let n = self.audio_left.min(data.len());
                audio.push(data.split_to(n));
                self.audio_left -= n;
                continue;
            }
            match self.block_len {
                None => {
                    let len = usize::from(data[0]) * 16;
                    data = data.slice(1..);
                    if len == 0 {
                        self.audio_left = self.metaint;
                    } else {
                        self.block_len = Some(len.min(MAX_BLOCK));
                    }
                }
                Some(len) => {
                    let n = (len - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data.split_to(n));
                    if self.block.len() == len {
                        if let Some(t) = stream_title(&self.block) {
                            titles.push(t);
                        }
                        self.block.clear();
                        self.block_len = None;
                        self.audio_left = self.metaint;
                    }
                }
            }
        }
        titles
    }
}

/// The `StreamTitle='…';` of a metadata block, if it has one.
pub fn stream_title(block: &[u8]) -> Option<String> {
    let end = block.iter().position(|&b| b == 0).unwrap_or(block.len());
    // Stations send Latin-1 as often as UTF-8; keep what decodes.
    let text = String::from_utf8_lossy(&block[..end]);
    let start = text.find("StreamTitle='")? + "StreamTitle='".len();
    let rest = &text[start..];
    // The value ends at "';" (a title may itself hold a quote).
    let value = match rest.find("';") {
        Some(i) => &rest[..i],
        None => rest.trim_end_matches('\''),
    };
    Some(value.trim().to_string())
}

/// "Artist - Title" as (title, artist); a title without " - " alone.
pub fn split_title(stream_title: &str) -> (String, Option<String>) {
    match stream_title.split_once(" - ") {
        Some((artist, title)) if !artist.trim().is_empty() && !title.trim().is_empty() => {
            (title.trim().to_string(), Some(artist.trim().to_string()))
        }
        _ => (stream_title.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(text: &str) -> Vec<u8> {
        let mut b = text.as_bytes().to_vec();
        b.resize(text.len().div_ceil(16) * 16, 0);
        let mut out = vec![(b.len() / 16) as u8];
        out.extend(b);
        out
    }

    #[test]
    fn audio_and_titles_are_split_whatever_the_pieces() {
        let mut body: Vec<u8> = Vec::new();
        let mut want: Vec<u8> = Vec::new();
        for i in 0..4u8 {
            let audio = vec![i; 10];
            body.extend(&audio);
            want.extend(&audio);
            if i % 2 == 0 {
                body.extend(block(&format!("StreamTitle='A{i} - T{i}';StreamUrl='';")));
            } else {
                body.push(0);
            }
        }
        for piece in [1, 3, 7, 100] {
            let mut d = Demuxer::new(10);
            let mut audio = Vec::new();
            let mut titles = Vec::new();
            for chunk in body.chunks(piece) {
                titles.extend(d.feed(Bytes::copy_from_slice(chunk), &mut audio));
            }
            let got: Vec<u8> = audio.iter().flat_map(|b| b.to_vec()).collect();
            assert_eq!(got, want, "pieces of {piece}");
            assert_eq!(titles, ["A0 - T0", "A2 - T2"], "pieces of {piece}");
        }
    }

    #[test]
    fn titles_split_into_artist_and_title() {
        assert_eq!(
            split_title("The Band - It's a Song"),
            ("It's a Song".into(), Some("The Band".into()))
        );
        assert_eq!(split_title("News at ten"), ("News at ten".into(), None));
        assert_eq!(
            stream_title(b"StreamTitle='Rock 'n' roll';\0\0"),
            Some("Rock 'n' roll".into())
        );
        assert_eq!(stream_title(b"StreamUrl='x';"), None);
    }
}

//! MPEG-TS (ISO/IEC 13818-1), as HLS radio serves it: the audio
//! elementary stream taken out of 188-byte transport packets, streamed.
//! The PAT names the first program's PMT; the PMT names the audio stream
//! (ADTS AAC, stream type 0x0F, or MPEG-1/2 audio, 0x03/0x04); that PID's
//! PES packets lose their headers and what they carry goes to the decoder
//! as a plain ADTS or MP3 stream. State carries across segments, so a
//! PES packet cut by a segment boundary stays whole.
//!
//! Memory: one partial packet (at most 187 bytes) is kept between feeds;
//! PSI sections are read within their packet (HLS muxers keep PAT and PMT
//! short), never gathered.

use bytes::{Bytes, BytesMut};

/// A transport packet's length.
pub const PACKET: usize = 188;
const SYNC: u8 = 0x47;

/// The codec of the audio stream a TS carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsAudio {
    /// AAC in ADTS frames (stream type 0x0F).
    Adts,
    /// MPEG-1/2 audio, layer 3 in practice (stream types 0x03, 0x04).
    Mpeg,
}

impl TsAudio {
    /// The decoder's hint: MIME type and extension.
    pub fn hint(self) -> (&'static str, &'static str) {
        match self {
            TsAudio::Adts => ("audio/aac", "aac"),
            TsAudio::Mpeg => ("audio/mpeg", "mp3"),
        }
    }
}

/// Whether a body is MPEG-TS, from its type, its URL's extension and its
/// first bytes (a sync byte every 188 bytes).
pub fn looks_like_ts(mime: Option<&str>, extension: Option<&str>, first: &[u8]) -> bool {
    let synced = first.first() == Some(&SYNC)
        && (first.len() <= PACKET || first[PACKET] == SYNC)
        && (first.len() <= 2 * PACKET || first[2 * PACKET] == SYNC);
    matches!(mime, Some("video/mp2t" | "video/mp2ts" | "audio/mp2t"))
        || (matches!(extension, Some("ts")) && synced)
        || (first.len() > 2 * PACKET && synced)
}

/// Takes the audio out of a transport stream fed in pieces of any size.
#[derive(Debug, Default)]
pub struct TsDemuxer {
    partial: BytesMut,
    pmt_pid: Option<u16>,
    audio: Option<(u16, TsAudio)>,
    /// Inside a PES packet of the audio PID (its start was seen).
    in_pes: bool,
    /// Bytes dropped looking for a sync byte, for the message if it never
    /// comes.
    lost: usize,
}

impl TsDemuxer {
    /// A demuxer at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The audio stream's codec, once the PMT named it.
    pub fn audio(&self) -> Option<TsAudio> {
        self.audio.map(|(_, a)| a)
    }

    /// Feeds `data`; the audio it completes is appended to `out`. Fails
    /// when the stream is not TS or carries no audio avsd decodes.
    pub fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let mut data = data;
        if !self.partial.is_empty() {
            let need = PACKET - self.partial.len();
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < PACKET {
                return Ok(());
            }
            let packet = std::mem::take(&mut self.partial);
            self.packet(&packet, out)?;
        }
        while !data.is_empty() {
            if data[0] != SYNC {
                // Lost sync: look for the next packet start.
                let skip = data.iter().position(|&b| b == SYNC).unwrap_or(data.len());
                self.lost += skip;
                if self.lost > 16 * PACKET {
                    return Err(format!(
                        "not an MPEG-TS stream: no sync byte in {} bytes",
                        self.lost
                    ));
                }
                data = &data[skip..];
                continue;
            }
            if data.len() < PACKET {
                self.partial.extend_from_slice(data);
                break;
            }
            self.lost = 0;
            self.packet(&data[..PACKET], out)?;
            data = &data[PACKET..];
        }
        Ok(())
    }

    fn packet(&mut self, p: &[u8], out: &mut BytesMut) -> Result<(), String> {
        if p[1] & 0x80 != 0 {
            return Ok(()); // transport error indicator: damaged, skipped
        }
        let start = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let control = (p[3] >> 4) & 0x03;
        let mut at = 4;
        if control & 0x02 != 0 {
            at += 1 + usize::from(p[4]);
        }
        if control & 0x01 == 0 || at >= PACKET {
            return Ok(()); // no payload
        }
        let payload = &p[at..];
        if pid == 0 && start {
            self.pat(section(payload));
        } else if Some(pid) == self.pmt_pid && start {
            self.pmt(section(payload))?;
        } else if let Some((audio_pid, _)) = self.audio
            && pid == audio_pid
        {
            self.pes(payload, start, out);
        }
        Ok(())
    }

    /// The PAT: the first program's PMT PID.
    fn pat(&mut self, s: Option<&[u8]>) {
        let Some(s) = s.filter(|s| s[0] == 0x00) else {
            return;
        };
        for e in s[8..].chunks_exact(4) {
            let program = u16::from_be_bytes([e[0], e[1]]);
            if program != 0 {
                self.pmt_pid = Some((u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]));
                return;
            }
        }
    }

    /// The PMT: the first audio stream avsd decodes.
    fn pmt(&mut self, s: Option<&[u8]>) -> Result<(), String> {
        let Some(s) = s.filter(|s| s[0] == 0x02 && s.len() >= 12) else {
            return Ok(());
        };
        let info = (usize::from(s[10] & 0x0f) << 8) | usize::from(s[11]);
        let mut es = s.get(12 + info..).unwrap_or_default();
        let mut seen = Vec::new();
        while es.len() >= 5 {
            let kind = es[0];
            let pid = (u16::from(es[1] & 0x1f) << 8) | u16::from(es[2]);
            let len = (usize::from(es[3] & 0x0f) << 8) | usize::from(es[4]);
            let audio = match kind {
                0x0f => Some(TsAudio::Adts),
                0x03 | 0x04 => Some(TsAudio::Mpeg),
                _ => None,
            };
            if let Some(a) = audio {
                if self.audio.map(|(p, _)| p) != Some(pid) {
                    self.audio = Some((pid, a));
                    self.in_pes = false;
                }
                return Ok(());
            }
            seen.push(format!("0x{kind:02x}"));
            es = es.get(5 + len..).unwrap_or_default();
        }
        Err(format!(
            "the MPEG-TS stream carries no ADTS AAC or MPEG audio (stream types: {}); \
             avsd decodes those two",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ))
    }

    /// A packet of the audio PID: the PES header dropped, the rest kept.
    fn pes(&mut self, payload: &[u8], start: bool, out: &mut BytesMut) {
        if start {
            // 00 00 01, stream id, length (2), flags (2), header length.
            if payload.len() < 9 || payload[..3] != [0, 0, 1] {
                self.in_pes = false;
                return;
            }
            let data = 9 + usize::from(payload[8]);
            self.in_pes = true;
            if let Some(es) = payload.get(data..) {
                out.extend_from_slice(es);
            }
        } else if self.in_pes {
            out.extend_from_slice(payload);
        }
    }
}

/// The PSI section a payload starting one holds, if it fits (its CRC
/// left off).
fn section(payload: &[u8]) -> Option<&[u8]> {
    let pointer = usize::from(*payload.first()?);
    let s = payload.get(1 + pointer..)?;
    if s.len() < 3 {
        return None;
    }
    let len = (usize::from(s[1] & 0x0f) << 8) | usize::from(s[2]);
    if len < 9 {
        return None;
    }
    // The header (3 bytes) and the section, less its 4-byte CRC.
    s.get(..3 + len - 4).filter(|s| s.len() >= 8)
}

/// Demuxes a whole buffer (tests).
pub fn demux_all(data: &[u8]) -> Result<(Option<TsAudio>, Bytes), String> {
    let mut d = TsDemuxer::new();
    let mut out = BytesMut::new();
    d.feed(data, &mut out)?;
    Ok((d.audio(), out.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport packet of `pid` with `payload` (padded by an
    /// adaptation field).
    fn packet(pid: u16, start: bool, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() <= PACKET - 4);
        let mut p = vec![
            SYNC,
            (pid >> 8) as u8 | if start { 0x40 } else { 0 },
            pid as u8,
        ];
        let pad = PACKET - 4 - payload.len();
        if pad == 0 {
            p.push(0x10);
        } else {
            p.push(0x30);
            p.push((pad - 1) as u8);
            if pad > 1 {
                p.push(0);
                p.extend(std::iter::repeat_n(0xff, pad - 2));
            }
        }
        p.extend_from_slice(payload);
        assert_eq!(p.len(), PACKET);
        p
    }

    fn psi(table: u8, body: &[u8]) -> Vec<u8> {
        let len = 5 + body.len() + 4;
        let mut s = vec![
            0,
            table,
            0xb0 | (len >> 8) as u8,
            len as u8,
            0,
            1,
            0xc1,
            0,
            0,
        ];
        s.extend_from_slice(body);
        s.extend([0, 0, 0, 0]); // CRC, not checked
        s
    }

    fn stream(kind: u8, es: &[u8]) -> Vec<u8> {
        let mut ts = packet(0, true, &psi(0x00, &[0, 1, 0xf0, 0x00]));
        // PMT on 0x1000: PCR PID, no program info, one stream on 0x101.
        let pmt = [0xe1, 0x01, 0xf0, 0x00, kind, 0xe1, 0x01, 0xf0, 0x00];
        ts.extend(packet(0x1000, true, &psi(0x02, &pmt)));
        let mut pes = vec![0, 0, 1, 0xc0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
        pes.extend_from_slice(&es[..es.len().min(PACKET - 4 - pes.len())]);
        let first = pes.len() - 14;
        ts.extend(packet(0x101, true, &pes));
        for chunk in es[first..].chunks(PACKET - 4) {
            ts.extend(packet(0x101, false, chunk));
        }
        ts
    }

    #[test]
    fn the_audio_comes_out_whole_whatever_the_pieces() {
        let es: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let ts = stream(0x0f, &es);
        assert!(looks_like_ts(None, None, &ts));
        let (audio, out) = demux_all(&ts).unwrap();
        assert_eq!(audio, Some(TsAudio::Adts));
        assert_eq!(&out[..], &es[..]);
        for size in [1, 7, 187, 188, 189, 500] {
            let mut d = TsDemuxer::new();
            let mut out = BytesMut::new();
            for piece in ts.chunks(size) {
                d.feed(piece, &mut out).unwrap();
            }
            assert_eq!(&out[..], &es[..], "fed {size} bytes at a time");
            assert!(d.partial.is_empty());
        }
    }

    #[test]
    fn mpeg_audio_is_named_and_other_streams_refused() {
        let (audio, _) = demux_all(&stream(0x03, b"abc")).unwrap();
        assert_eq!(audio, Some(TsAudio::Mpeg));
        let err = demux_all(&stream(0x1b, b"abc")).unwrap_err();
        assert!(err.contains("0x1b"), "{err}");
    }

    #[test]
    fn text_is_not_ts() {
        let err = demux_all(&[b'x'; 4000]).unwrap_err();
        assert!(err.contains("not an MPEG-TS"), "{err}");
        assert!(!looks_like_ts(None, Some("aac"), b"#EXTM3U"));
    }
}

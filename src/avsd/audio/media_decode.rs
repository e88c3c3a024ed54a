//! Decoding AudioPlayer streams ([`crate::media`]): MP3, AAC (ADTS and
//! MP4/M4A), Ogg Vorbis and FLAC with symphonia, the container chosen by
//! probing with the stream's [`FormatHint`]. Speech keeps its own MP3-only
//! path in `decode.rs` (no probing before the first frame).

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{
    MediaSource, MediaSourceStream, MediaSourceStreamOptions, ReadOnlySource,
};
use symphonia::core::meta::MetadataOptions;

use super::AudioError;
use super::decode::block_on;
use super::mixer::{SourceControl, SourceFeed};
use super::resample::MonoResampler;
use crate::media::{AudioItem, FormatHint, MediaAudio};

/// A blocking [`Read`] over a stream's audio bytes, for a decoder thread;
/// with a `control`, it gives up once the sound was stopped. A seekable
/// stream ([`FormatHint::seekable`]) seeks by asking the fetch for the file
/// from another byte on.
pub struct MediaReader {
    // symphonia wants a `Sync` source; only the decoder thread locks it.
    audio: Mutex<MediaAudio>,
    control: Option<Arc<SourceControl>>,
    current: Bytes,
    /// The file's byte `current` starts at.
    pos: u64,
    length: Option<u64>,
    seekable: bool,
}

impl MediaReader {
    /// Waits for the stream's [`FormatHint`] (its first item) and returns
    /// it with the reader of the bytes after it; `None` if the stream
    /// ended, or the sound was stopped, first.
    pub fn open(
        mut audio: MediaAudio,
        control: Option<Arc<SourceControl>>,
    ) -> Option<(FormatHint, Self)> {
        let first = next_item(&mut audio, control.as_deref())?;
        let (hint, current) = match first {
            AudioItem::Format(h) => (h, Bytes::new()),
            AudioItem::Bytes(b) => (FormatHint::default(), b),
            AudioItem::Seeked(_) => (FormatHint::default(), Bytes::new()),
        };
        let reader = Self {
            audio: Mutex::new(audio),
            control,
            current,
            pos: 0,
            length: hint.length,
            seekable: hint.seekable,
        };
        Some((hint, reader))
    }

    fn audio(&mut self) -> io::Result<&mut MediaAudio> {
        self.audio
            .get_mut()
            .map_err(|_| io::Error::other("poisoned"))
    }
}

fn next_item(audio: &mut MediaAudio, control: Option<&SourceControl>) -> Option<AudioItem> {
    block_on(async {
        match control {
            Some(c) => tokio::select! {
                biased;
                () = c.stopped() => None,
                item = audio.recv() => item,
            },
            None => audio.recv().await,
        }
    })
}

impl Read for MediaReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            // A seekable file's body may stay open for seeks: its end is
            // its length, not the channel closing.
            if self.seekable && self.length.is_some_and(|l| self.pos >= l) {
                return Ok(0);
            }
            let control = self.control.clone();
            match next_item(self.audio()?, control.as_deref()) {
                Some(AudioItem::Bytes(b)) => self.current = b,
                Some(AudioItem::Format(_) | AudioItem::Seeked(_)) => continue,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Forward seeks shorter than this read on instead of asking again.
const SKIP_AHEAD: u64 = 64 * 1024;

impl Seek for MediaReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.length.and_then(|l| l.checked_add_signed(d)),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        if target >= self.pos && target - self.pos <= SKIP_AHEAD {
            let mut left = target - self.pos;
            let mut sink = [0u8; 4096];
            while left > 0 {
                let n = self.read(&mut sink[..left.min(4096) as usize])?;
                if n == 0 {
                    break;
                }
                left -= n as u64;
            }
            return Ok(self.pos);
        }
        if !self.seekable {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the stream cannot seek",
            ));
        }
        if self.length.is_some_and(|l| target >= l) {
            // At (or past) the end there is nothing to fetch; bytes still
            // queued are dropped at the next seek's mark.
            self.current = Bytes::new();
            self.pos = target;
            return Ok(target);
        }
        let control = self.control.clone();
        let audio = self.audio()?;
        if !block_on(audio.seek(target)) {
            return Err(io::Error::other("the stream ended"));
        }
        // Bytes still queued from the old position come before the mark.
        loop {
            match next_item(audio, control.as_deref()) {
                Some(AudioItem::Seeked(p)) if p == target => break,
                Some(_) => continue,
                None => return Err(io::Error::other("the stream ended while seeking")),
            }
        }
        self.current = Bytes::new();
        self.pos = target;
        Ok(target)
    }
}

impl MediaSource for MediaReader {
    fn is_seekable(&self) -> bool {
        self.seekable
    }

    fn byte_len(&self) -> Option<u64> {
        self.length
    }
}

/// Decodes one stream, whatever its container and codec, to mono `f32`.
pub struct MediaDecoder {
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track: u32,
    interleaved: Vec<f32>,
    /// Source frames still to drop for the hint's `skip_ms`.
    skip: u64,
    /// The stream's sample rate, in Hz.
    pub rate: u32,
}

impl MediaDecoder {
    /// Probes `source` (blocking until enough has arrived) and opens the
    /// decoder of its first audio track.
    pub fn open(source: MediaReader, hint: &FormatHint) -> Result<Self, AudioError> {
        let source: Box<dyn MediaSource> = if source.seekable {
            Box::new(source)
        } else {
            Box::new(ReadOnlySource::new(source))
        };
        let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
        let mut h = Hint::new();
        if let Some(m) = &hint.mime {
            h.mime_type(m);
        }
        if let Some(e) = &hint.extension {
            h.with_extension(e);
        }
        let reader = symphonia::default::get_probe()
            .probe(
                &h,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| {
                AudioError::Decode(format!("unknown or unsupported stream format ({e})"))
            })?;
        let (decoder, track, rate) = open_decoder(reader.as_ref())?;
        Ok(Self {
            reader,
            decoder,
            track,
            interleaved: Vec::new(),
            skip: hint.skip_ms * u64::from(rate) / 1000,
            rate,
        })
    }

    /// Appends the next decoded packet, mixed to mono, to `out`.
    /// `Ok(false)` at the end of the stream. Corrupt packets are skipped.
    pub fn next_block(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        loop {
            let packet = match self.reader.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(false),
                Err(SymError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(false);
                }
                Err(SymError::ResetRequired) => {
                    // A chained stream (a new Ogg logical stream): new params.
                    let (decoder, track, _) = open_decoder(self.reader.as_ref())?;
                    self.decoder = decoder;
                    self.track = track;
                    continue;
                }
                Err(e) => return Err(AudioError::Decode(e.to_string())),
            };
            if packet.track_id != self.track {
                continue;
            }
            let buf = match self.decoder.decode(&packet) {
                Ok(buf) => buf,
                Err(SymError::DecodeError(e)) => {
                    tracing::debug!(error = e, "skipping a corrupt packet");
                    continue;
                }
                Err(e) => return Err(AudioError::Decode(e.to_string())),
            };
            buf.copy_to_vec_interleaved(&mut self.interleaved);
            let ch = buf.spec().channels().count().max(1);
            let frames = (self.interleaved.len() / ch) as u64;
            if self.skip >= frames {
                self.skip -= frames;
                continue;
            }
            let from = self.skip as usize * ch;
            self.skip = 0;
            super::resample::downmix_into(&self.interleaved[from..], ch, out);
            return Ok(true);
        }
    }
}

fn open_decoder(
    reader: &dyn FormatReader,
) -> Result<(Box<dyn AudioDecoder>, u32, u32), AudioError> {
    let track = reader
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::Decode("the stream has no audio track".into()))?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| {
            AudioError::Decode("the stream's audio track has no codec parameters".into())
        })?;
    let rate = params
        .sample_rate
        .ok_or_else(|| AudioError::Decode("the stream has no sample rate".into()))?;
    let decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| AudioError::Decode(format!("unsupported codec ({e})")))?;
    Ok((decoder, track.id, rate))
}

/// Decodes `audio` to mono at `rate` Hz, handing each block to `sink`
/// until it returns false or the stream ends; blocks, so run it on a
/// thread of its own (tests and benchmarks; the speaker has its own entry).
pub fn decode_media_blocking(
    audio: MediaAudio,
    rate: u32,
    sink: impl FnMut(&[f32]) -> bool,
) -> Result<(), AudioError> {
    decode_with(audio, None, rate, sink)
}

/// The speaker's decoder thread for a stream: like `decode::decode`, into
/// the mixer source `feed` at the output's `rate`.
pub(super) fn decode(audio: MediaAudio, mut feed: SourceFeed, rate: u32) -> Result<(), AudioError> {
    let control = feed.control().clone();
    decode_with(audio, Some(control), rate, |mono| {
        super::decode::write(&mut feed, mono)
    })
}

fn decode_with(
    audio: MediaAudio,
    control: Option<Arc<SourceControl>>,
    rate: u32,
    mut sink: impl FnMut(&[f32]) -> bool,
) -> Result<(), AudioError> {
    let Some((hint, reader)) = MediaReader::open(audio, control) else {
        return Ok(());
    };
    let mut stream = MediaDecoder::open(reader, &hint)?;
    let mut resampler = MonoResampler::new(stream.rate, rate).map_err(AudioError::Decode)?;
    let (mut block, mut out) = (Vec::new(), Vec::new());
    loop {
        block.clear();
        out.clear();
        let more = stream.next_block(&mut block)?;
        if more {
            resampler.process(&block, &mut out)
        } else {
            resampler.flush(&mut out)
        }
        .map_err(AudioError::Decode)?;
        if !sink(&out) || !more {
            return Ok(());
        }
    }
}

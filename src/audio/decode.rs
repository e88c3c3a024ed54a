//! Streaming MP3 decoding with symphonia, from bytes that arrive piece by piece.

use std::io::{self, Read};
use std::sync::Mutex;
use std::sync::mpsc::Receiver;

use bytes::{Buf, Bytes};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions, ReadOnlySource};
use symphonia::default::codecs::MpaDecoder;
use symphonia::default::formats::MpaReader;

use super::AudioError;

/// A blocking [`Read`] over the MP3 bytes pushed so far: it waits for the
/// next piece and reports end of file once the sender is gone. Runs on the
/// decoder thread, where blocking is the point.
pub(crate) struct ChannelReader {
    // symphonia wants a `Sync` source; only the decoder thread ever locks it.
    rx: Mutex<Receiver<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: Receiver<Bytes>) -> Self {
        Self {
            rx: Mutex::new(rx),
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            let rx = self
                .rx
                .get_mut()
                .map_err(|_| io::Error::other("poisoned"))?;
            match rx.recv() {
                Ok(b) => self.current = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Decodes an MP3 stream into mono `f32` blocks.
pub(crate) struct Mp3Stream {
    reader: MpaReader<'static>,
    decoder: MpaDecoder,
    interleaved: Vec<f32>,
    /// Sample rate of the MP3, known after the first frame.
    pub(crate) rate: u32,
}

impl Mp3Stream {
    /// Reads up to the first MPEG frame (blocking until it has arrived).
    pub(crate) fn open(source: ChannelReader) -> Result<Self, AudioError> {
        let mss = MediaSourceStream::new(
            Box::new(ReadOnlySource::new(source)),
            MediaSourceStreamOptions::default(),
        );
        let reader = MpaReader::try_new(mss, FormatOptions::default()).map_err(decode_error)?;
        let params = reader
            .tracks()
            .first()
            .and_then(|t| t.codec_params.as_ref())
            .and_then(|p| p.audio())
            .cloned()
            .ok_or_else(|| AudioError::Decode("no audio track in the MP3".into()))?;
        let rate = params
            .sample_rate
            .ok_or_else(|| AudioError::Decode("the MP3 has no sample rate".into()))?;
        let decoder =
            MpaDecoder::try_new(&params, &AudioDecoderOptions::default()).map_err(decode_error)?;
        Ok(Self {
            reader,
            decoder,
            interleaved: Vec::new(),
            rate,
        })
    }

    /// Appends the next decoded frame, mixed to mono, to `out`. `Ok(false)`
    /// at the end of the stream. A corrupt frame is skipped, as players do;
    /// only a stream that cannot be read is an error.
    pub(crate) fn next_block(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        loop {
            let packet = match self.reader.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(false),
                Err(SymError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(false);
                }
                Err(e) => return Err(decode_error(e)),
            };
            match self.decoder.decode(&packet) {
                Ok(buf) => {
                    buf.copy_to_vec_interleaved(&mut self.interleaved);
                    let ch = buf.spec().channels().count().max(1);
                    super::resample::downmix_into(&self.interleaved, ch, out);
                    return Ok(true);
                }
                Err(SymError::DecodeError(e)) => {
                    tracing::debug!(error = e, "skipping a corrupt MP3 frame");
                    continue;
                }
                Err(e) => return Err(decode_error(e)),
            }
        }
    }
}

fn decode_error(e: SymError) -> AudioError {
    AudioError::Decode(e.to_string())
}

//! Streaming MP3 decoding with symphonia, from bytes that arrive piece by
//! piece, and the playback decoder thread that feeds the output ring.

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::Duration;

use bytes::{Buf, Bytes};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions, ReadOnlySource};
use symphonia::default::codecs::MpaDecoder;
use symphonia::default::formats::MpaReader;

use super::AudioError;
use super::device::StreamFormat;
use super::playback::Shared;
use super::resample::{AudioSample, MonoResampler};

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

/// The decoder thread: MP3 bytes in, device samples into the ring.
pub(super) fn decode<T: AudioSample>(
    input: std::sync::mpsc::Receiver<Bytes>,
    mut producer: rtrb::Producer<T>,
    format: StreamFormat,
    shared: Arc<Shared>,
    owner: Thread,
) {
    let fail = |e: AudioError| {
        tracing::warn!(error = %e, "MP3 answer failed");
        if let Ok(mut slot) = shared.decode_error.lock() {
            *slot = Some(e);
        }
        owner.unpark();
    };
    let mut mp3 = match Mp3Stream::open(ChannelReader::new(input)) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let mut resampler = match MonoResampler::new(mp3.rate, format.rate) {
        Ok(r) => r,
        Err(e) => return fail(AudioError::Decode(e)),
    };
    let channels = usize::from(format.channels);
    let mut block = Vec::new();
    let mut out = Vec::new();
    loop {
        block.clear();
        out.clear();
        let more = match mp3.next_block(&mut block) {
            Ok(more) => more,
            Err(e) => return fail(e),
        };
        let step = if more {
            resampler.process(&block, &mut out)
        } else {
            resampler.flush(&mut out)
        };
        if let Err(e) = step {
            return fail(AudioError::Decode(e));
        }
        if !write(&mut producer, &out, channels, &shared) {
            return; // stopped
        }
        if !more {
            shared.decoded_all.store(true, Ordering::Release);
            owner.unpark();
            return;
        }
    }
}

/// Writes mono samples to every channel of the ring, waiting for room.
/// Returns false when playback was stopped meanwhile.
fn write<T: AudioSample>(
    producer: &mut rtrb::Producer<T>,
    mono: &[f32],
    channels: usize,
    shared: &Shared,
) -> bool {
    let mut rest = mono;
    while !rest.is_empty() {
        // Stopped, or the playback thread is gone (device failure): give up
        // instead of waiting for room that will never come.
        if shared.stop.load(Ordering::Acquire) || producer.is_abandoned() {
            return false;
        }
        let frames = (producer.slots() / channels).min(rest.len());
        if frames == 0 {
            // The ring is full: the device plays at real time and the decoder
            // is ahead. Wait about a period; this thread may block.
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        if let Ok(chunk) = producer.write_chunk_uninit(frames * channels) {
            let samples = rest[..frames]
                .iter()
                .flat_map(|s| std::iter::repeat_n(T::from_f32(*s), channels));
            chunk.fill_from_iter(samples);
        }
        shared
            .decoded_frames
            .fetch_add(frames as u64, Ordering::Release);
        rest = &rest[frames..];
    }
    true
}

//! Streaming MP3 decoding with symphonia, from bytes that arrive piece by
//! piece, into a mixer source. Run by the speaker's decoder threads; it
//! knows nothing of the speaker.

use std::future::Future;
use std::io::{self, Read};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use bytes::{Buf, Bytes};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions, ReadOnlySource};
use symphonia::default::codecs::MpaDecoder;
use symphonia::default::formats::MpaReader;
use tokio::sync::mpsc;

use super::AudioError;
use super::mixer::{SourceControl, SourceFeed};
use super::resample::MonoResampler;

/// Where an answer's MP3 bytes come from.
pub(crate) enum Mp3Input {
    /// Straight from the `Speak` attachment as it streams in; the flag
    /// says whether its first bytes have been seen (for the log line
    /// scripts/bench times "answer to sound" from).
    Attachment(mpsc::Receiver<Bytes>, bool),
    /// Pushed piece by piece through [`super::Player::push`].
    Pushed(mpsc::UnboundedReceiver<Bytes>),
    /// An AudioPlayer stream, any codec: decoded by `media_decode.rs`.
    Media(crate::media::MediaAudio),
}

impl Mp3Input {
    /// The next piece; `None` at the end of the MP3 or once `control` says
    /// nobody will play it any more. Blocks the decoder thread (parked, no
    /// CPU) until one of the two happens.
    fn next(&mut self, control: &SourceControl) -> Option<Bytes> {
        let attachment = matches!(self, Mp3Input::Attachment(..));
        let piece = block_on(async {
            tokio::select! {
                biased;
                () = control.stopped() => None,
                piece = self.recv() => Some(piece),
            }
        })?;
        if let Mp3Input::Attachment(_, seen @ false) = self
            && piece.is_some()
        {
            *seen = true;
            // scripts/bench times "answer to sound" from here to the
            // dialog's "speaking" line (the first sample handed to ALSA).
            tracing::debug!("the answer's first audio bytes have arrived");
        }
        if piece.is_none() && attachment {
            tracing::debug!("the answer's audio has arrived in full");
        }
        piece
    }

    async fn recv(&mut self) -> Option<Bytes> {
        match self {
            Mp3Input::Attachment(rx, _) => rx.recv().await,
            Mp3Input::Pushed(rx) => rx.recv().await,
            // Never read here: `decode` hands it to `media_decode`.
            Mp3Input::Media(_) => None,
        }
    }
}

/// Wakes a parked thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this (decoder) thread, parked between wake-ups. tokio's
/// own blocking receive cannot also wait for a stop; this waits for both.
/// The futures it runs need no runtime (channel and `Notify` only).
pub(super) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        // A wake-up between the poll and here leaves the token set, so
        // this returns at once; a spurious return only polls again.
        thread::park();
    }
}

/// A blocking [`Read`] over the MP3 bytes: it waits for the next piece and
/// reports end of file at the end of the input. Runs on a decoder thread,
/// where blocking is the point.
pub(crate) struct ChannelReader {
    // symphonia wants a `Sync` source; only the decoder thread ever locks it.
    input: Mutex<Mp3Input>,
    control: Arc<SourceControl>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(input: Mp3Input, control: Arc<SourceControl>) -> Self {
        Self {
            input: Mutex::new(input),
            control,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            let input = self
                .input
                .get_mut()
                .map_err(|_| io::Error::other("poisoned"))?;
            match input.next(&self.control) {
                Some(b) => self.current = b,
                None => return Ok(0),
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

/// Decodes one answer from `input` into `feed` (mono at `rate` Hz, the
/// output's rate), waiting for room in its ring. Returns when the MP3 has
/// been decoded in full, or early once the source was stopped; the feed is
/// finished either way when it is dropped.
pub(super) fn decode(input: Mp3Input, mut feed: SourceFeed, rate: u32) -> Result<(), AudioError> {
    if let Mp3Input::Media(audio) = input {
        return super::media_decode::decode(audio, feed, rate);
    }
    let source = ChannelReader::new(input, feed.control().clone());
    let mut mp3 = Mp3Stream::open(source)?;
    let mut resampler = MonoResampler::new(mp3.rate, rate).map_err(AudioError::Decode)?;
    let mut block = Vec::new();
    let mut out = Vec::new();
    loop {
        block.clear();
        out.clear();
        let more = mp3.next_block(&mut block)?;
        if more {
            resampler.process(&block, &mut out)
        } else {
            resampler.flush(&mut out)
        }
        .map_err(AudioError::Decode)?;
        if !write(&mut feed, &out) || !more {
            return Ok(());
        }
    }
}

/// Writes mono samples into the source's ring, waiting for room. Returns
/// false when the source was stopped meanwhile.
pub(super) fn write(feed: &mut SourceFeed, mono: &[f32]) -> bool {
    let mut rest = mono;
    while !rest.is_empty() {
        // Stopped, or the output is gone (device failure): give up instead
        // of waiting for room that will never come.
        if feed.is_closed() {
            return false;
        }
        let n = feed.push(rest);
        if n == 0 {
            // The ring is full: the device plays at real time and the decoder
            // is ahead. Wait about a period; this thread may block.
            thread::sleep(Duration::from_millis(5));
        }
        rest = &rest[n..];
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use super::*;
    use crate::audio::mixer::Mixer;

    /// A stopped answer's decoder lets go even if its attachment stays
    /// open and silent (a stalled connection).
    #[test]
    fn a_stop_wakes_a_decoder_waiting_for_bytes() {
        let (_mixer, mut handle) = Mixer::new(16_000);
        let feed = handle.add(1600, 1.0).expect("room for a source");
        let control = feed.control().clone();
        let waiter_control = control.clone();
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let (got, pieces) = std_mpsc::channel();
        let waiter = thread::spawn(move || {
            let mut input = Mp3Input::Attachment(rx, false);
            let first = input.next(&waiter_control);
            let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
            got.send((first, me)).expect("the test waits");
            // Waits here, parked: the sender stays open and sends nothing.
            input.next(&waiter_control)
        });
        tx.try_send(Bytes::from_static(b"ID3")).expect("room");
        let (first, waiter_task) = pieces
            .recv_timeout(Duration::from_secs(10))
            .expect("the first piece");
        assert_eq!(first.as_deref(), Some(&b"ID3"[..]));
        // Stop only once the waiter sleeps in its wait for the next piece,
        // so that the stop has to wake it.
        let stat = std::path::Path::new("/proc").join(waiter_task).join("stat");
        let asleep = std::time::Instant::now();
        loop {
            let text = std::fs::read_to_string(&stat).expect("the waiter's stat");
            // The state follows the ")" that ends the thread's name.
            let state = text
                .rsplit(')')
                .next()
                .and_then(|r| r.trim().chars().next());
            if state == Some('S') {
                break;
            }
            assert!(
                asleep.elapsed() < Duration::from_secs(10),
                "the waiter never slept: {text}"
            );
            thread::yield_now();
        }
        control.stop();
        let (done, finished) = std_mpsc::channel();
        thread::spawn(move || done.send(waiter.join().expect("no panic")));
        let after_stop = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the decoder stopped waiting once stopped");
        assert_eq!(after_stop, None);
        drop(tx);
    }

    #[test]
    fn a_closed_input_ends_after_its_last_piece() {
        let (_mixer, mut handle) = Mixer::new(16_000);
        let feed = handle.add(1600, 1.0).expect("room for a source");
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let mut input = Mp3Input::Pushed(rx);
        tx.send(Bytes::from_static(b"abc")).expect("open");
        drop(tx);
        assert_eq!(input.next(feed.control()).as_deref(), Some(&b"abc"[..]));
        assert_eq!(input.next(feed.control()), None);
    }
}

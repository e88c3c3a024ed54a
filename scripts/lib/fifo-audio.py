#!/usr/bin/env python3
"""Real-time ends for ALSA `file` PCMs backed by FIFOs, for scripts/demo.

ALSA's `file` plugin over a `null` slave is unpaced: it reads and writes
its file as fast as it can. A FIFO with one of these on the other end runs
it at real time, like a sound card would.

  fifo-audio.py feed FIFO RAW CHUNK   speak RAW into FIFO, CHUNK bytes per
                                      10 ms, then silence; only while avsd
                                      reads (nothing piles up meanwhile)
  fifo-audio.py loop FIFO RAW CHUNK   like a sound card, for scripts/bench:
                                      RAW over and over, CHUNK bytes per
                                      10 ms, and a period nobody read by the
                                      next tick is thrown away, so a capture
                                      that opens finds no stale audio
  fifo-audio.py drain FIFO OUT BYTES  read FIFO at BYTES per 10 ms into OUT

Both hold the FIFO open read-write, so ALSA's opens never block and a
closed device never reads as end of file. They run until killed.
"""

import fcntl
import os
import struct
import sys
import termios
import time


def ticks():
    """Yield every 10 ms on a steady clock, without drifting."""
    next_at = time.monotonic()
    while True:
        yield
        next_at += 0.01
        wait = next_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            next_at = time.monotonic()


def queued(fd):
    """Bytes waiting in the pipe."""
    raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", raw)[0]


# A one-page pipe: what ALSA has written is heard within a few ms, as on a
# sound card, instead of up to 64 KiB (2 s of 16 kHz mono) later.
F_SETPIPE_SZ = 1031


def open_fifo(path):
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    fcntl.fcntl(fd, F_SETPIPE_SZ, 4096)
    return fd


def feed(fifo, raw, chunk):
    speech = open(raw, "rb").read()
    fd = open_fifo(fifo)
    at = 0
    for _ in ticks():
        if queued(fd) >= 2 * chunk:
            continue
        piece = speech[at:at + chunk].ljust(chunk, b"\0")
        at += chunk
        try:
            os.write(fd, piece)
        except BlockingIOError:
            pass


def loop(fifo, raw, chunk):
    speech = open(raw, "rb").read()
    speech += b"\0" * (-len(speech) % chunk)
    fd = open_fifo(fifo)
    at = 0
    for _ in ticks():
        stale = queued(fd)
        if stale:
            try:
                os.read(fd, stale)
            except BlockingIOError:
                pass
        try:
            os.write(fd, speech[at:at + chunk])
        except BlockingIOError:
            pass
        at = (at + chunk) % len(speech)


def drain(fifo, out, per_tick):
    fd = open_fifo(fifo)
    with open(out, "wb") as sink:
        for _ in ticks():
            try:
                data = os.read(fd, per_tick)
            except BlockingIOError:
                continue
            sink.write(data)
            sink.flush()


def main():
    modes = {"feed": feed, "loop": loop, "drain": drain}
    if len(sys.argv) != 5 or sys.argv[1] not in modes:
        sys.exit(__doc__)
    mode, fifo, path, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    try:
        modes[mode](fifo, path, size)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

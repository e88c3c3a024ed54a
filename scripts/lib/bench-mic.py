#!/usr/bin/env python3
"""A microphone for scripts/bench: a FIFO behind an ALSA `file` PCM that
behaves like a sound card's capture side, for many dialogs in a row.

  bench-mic.py FIFO RAW CHUNK

Every 10 ms it writes the next CHUNK bytes of RAW (16 kHz mono s16le,
looped forever, so every dialog hears speech). Like a card, it does not
keep what nobody reads: when the previous period is still in the pipe at
the next tick (the device is closed or not being read), it is thrown away
first. So a capture that opens finds at most one period that is under
10 ms old, and waits for the next as on real hardware, instead of
finding stale audio queued up (which would make the first byte look
faster than a microphone can deliver it).

It holds the FIFO open read-write, so ALSA's open never blocks and a
closed device never reads as end of file. Runs until killed.
"""

import fcntl
import os
import struct
import sys
import termios
import time

F_SETPIPE_SZ = 1031


def queued(fd):
    raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", raw)[0]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    fifo, raw, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
    speech = open(raw, "rb").read()
    speech += b"\0" * (-len(speech) % chunk)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    fcntl.fcntl(fd, F_SETPIPE_SZ, 4096)
    at = 0
    next_at = time.monotonic()
    while True:
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
        next_at += 0.01
        wait = next_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            next_at = time.monotonic()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass

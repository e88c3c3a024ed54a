#!/usr/bin/env python3
"""Measuring helpers for scripts/bench (python3 standard library only).

Each subcommand measures one thing and prints one JSON object on stdout;
`report` turns the collected objects into the figures table.

  bench.py startup   --runs K [--connected] -- AVSD ARGS...
        exec to READY=1 (a NOTIFY_SOCKET bound here), and with --connected
        exec to Dialog.Connection == "connected" (polled every 2 ms)
  bench.py sample    PID SECS
        CPU share, wake-ups/s (context switches of all threads), RSS
  bench.py proc      PID
        VmRSS, VmHWM, open fds right now
  bench.py dialogs   PID CONTROL N AVS_LOG [CHECKPOINT [BUDGET_SECS [AVSD_LOG]]]
        N Tap dialogs through D-Bus, timed against the stand-in; with
        AVSD_LOG (avsd's stderr at avsd=debug) also answer to sound
  bench.py reconnects PID CONTROL M [CHECKPOINT]
        M connection cuts (POST /cut) and the reconnection each time
  bench.py refusals  CONTROL N AVSD_LOG
        N refused tokens: the stand-in refuses the token of the next
        Recognize (POST /refuse_token), a Tap sends one; from avsd's log,
        the 403 to "connected to AVS" on a new token
  bench.py volume    CONTROL N
        N Speaker.AdjustVolume calls over D-Bus (-1 and +1 in turn), each
        timed to its return and to the VolumeChanged event at the stand-in
  bench.py logins    COMPANION CA SECS WORKERS PRODUCT [PID...]
        complete logins (device registers, browser follows the login
        link through the LWA stand-in, device polls a token) for SECS s
        with WORKERS threads; PIDs (companion, LWA stand-in): their CPU
  bench.py arecord   DEVICE RUNS
        the reference: arecord exec to its first captured 10 ms period
  bench.py h2log     LOGFILE
        latency percentiles from an h2load --log-file
  bench.py report    DIR
        the table, from DIR/*.json

D-Bus is spoken directly (a minimal client on an AF_UNIX socket), so a
call's timing holds no process start-up: the bus address comes from
DBUS_SYSTEM_BUS_ADDRESS.
"""

import html
import json
import math
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from http.cookiejar import CookieJar

DEST = "org.avsd.Avs1"
PATH = "/org/avsd/Avs1"
DIALOG = "org.avsd.Avs1.Dialog"


# --------------------------------------------------------------- D-Bus ----

def _pad(buf, n):
    buf.extend(b"\0" * (-len(buf) % n))


def _put_str(buf, s, sig=False):
    data = s.encode()
    if sig:
        buf.append(len(data))
    else:
        _pad(buf, 4)
        buf.extend(struct.pack("<I", len(data)))
    buf.extend(data + b"\0")


class DBusError(Exception):
    pass


class Bus:
    """Just enough D-Bus: method calls with string arguments, and replies
    whose body is a variant holding a string (Properties.Get)."""

    def __init__(self, address=None):
        address = address or os.environ["DBUS_SYSTEM_BUS_ADDRESS"]
        path = dict(kv.split("=", 1) for kv in address.split(":", 1)[1].split(","))["path"]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        uid = str(os.getuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
        line = self._line()
        if not line.startswith(b"OK"):
            raise DBusError("auth: %r" % line)
        self.sock.sendall(b"BEGIN\r\n")
        self.serial = 0
        self.buf = b""
        self.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello")

    def _line(self):
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = self.sock.recv(1)
            if not chunk:
                raise DBusError("bus closed during auth")
            data += chunk
        return data

    def _recv(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise DBusError("bus closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, dest, path, iface, member, args=(), raw=None):
        """`args` are strings; or `raw` is (signature, body bytes)."""
        self.serial += 1
        body = bytearray()
        for a in args:
            _put_str(body, a)
        signature = "s" * len(args)
        if raw:
            signature, body = raw[0], bytearray(raw[1])
        fields = bytearray()
        for code, sig, val in ((1, "o", path), (2, "s", iface), (3, "s", member),
                               (6, "s", dest)) + (((8, "g", signature),) if signature else ()):
            _pad(fields, 8)
            fields.append(code)
            _put_str(fields, sig, sig=True)
            # offsets inside the fields array are relative to the message
            # start: the array starts at 16, a multiple of 8, so alignment
            # relative to the array is the same.
            _put_str(fields, val, sig=(sig == "g"))
        msg = bytearray(b"l\x01\x00\x01")
        msg.extend(struct.pack("<III", len(body), self.serial, len(fields)))
        msg.extend(fields)
        _pad(msg, 8)
        msg.extend(body)
        self.sock.sendall(bytes(msg))
        return self.serial

    def reply(self, serial):
        """Read messages until the reply to `serial`; its body bytes."""
        while True:
            head = self._recv(16)
            mtype = head[1]
            body_len, _serial, fields_len = struct.unpack("<III", head[4:16])
            rest = self._recv(fields_len + (-(16 + fields_len) % 8) + body_len)
            fields = rest[:fields_len]
            body = rest[len(rest) - body_len:] if body_len else b""
            info = self._fields(fields)
            if info.get(5) != serial:
                continue
            if mtype == 3:
                err = info.get(4, "?")
                raise DBusError(err + ": " + self._first_string(body))
            return body

    @staticmethod
    def _fields(data):
        out, i = {}, 0
        while i < len(data):
            i += -i % 8
            code = data[i]
            slen = data[i + 1]
            sig = data[i + 2:i + 2 + slen].decode()
            i += 3 + slen
            if sig in ("s", "o"):
                i += -i % 4
                (n,) = struct.unpack_from("<I", data, i)
                out[code] = data[i + 4:i + 4 + n].decode()
                i += 5 + n
            elif sig == "g":
                n = data[i]
                out[code] = data[i + 1:i + 1 + n].decode()
                i += 2 + n
            elif sig == "u":
                i += -i % 4
                (out[code],) = struct.unpack_from("<I", data, i)
                i += 4
            else:
                break
        return out

    @staticmethod
    def _first_string(body):
        if len(body) < 4:
            return ""
        (n,) = struct.unpack_from("<I", body, 0)
        return body[4:4 + n].decode(errors="replace")

    def call(self, dest, path, iface, member, args=()):
        return self.reply(self.send(dest, path, iface, member, args))

    def get_string(self, iface, prop):
        body = self.call(DEST, PATH, "org.freedesktop.DBus.Properties", "Get", (iface, prop))
        # variant: signature "s", pad to 4, uint32 length, bytes
        slen = body[0]
        i = 2 + slen
        i += -i % 4
        (n,) = struct.unpack_from("<I", body, i)
        return body[i + 4:i + 4 + n].decode()


# ---------------------------------------------------------------- misc ----

def stats(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    def pct(p):
        k = max(0, min(len(v) - 1, math.ceil(p / 100.0 * len(v)) - 1))  # nearest rank
        return v[k]
    return {"n": len(v), "median": v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2,
            "p95": pct(95), "p99": pct(99), "max": v[-1], "min": v[0]}


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def threads(pid):
    """Per thread: CPU time (ns, schedstat) and context switches."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns = int(f.read().split()[0])
            sw = 0
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        sw += int(line.split()[1])
            out[tid] = (ns, sw)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def ticks(pid):
    """utime + stime of the whole process, exited threads included."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def thread_deltas(before, after):
    """CPU ns and switches over a window: threads alive at its end count
    from the start (or from 0 when they began within it); threads that
    ended within it are missed (see `ticks` for a total that has them)."""
    ns = sw = 0
    for tid, (n1, s1) in after.items():
        n0, s0 = before.get(tid, (0, 0))
        ns += n1 - n0
        sw += s1 - s0
    return ns, sw, len(set(before) - set(after)), len(set(after) - set(before))


def http(url, method="GET", timeout=60):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body.strip().startswith((b"{", b"[")) else body


def wait_state(bus, want, prop="State", timeout=30.0, every=0.01):
    end = time.monotonic() + timeout
    while True:
        try:
            if bus.get_string(DIALOG, prop) == want:
                return True
        except DBusError:
            pass
        if time.monotonic() > end:
            return False
        time.sleep(every)


# ------------------------------------------------------------ commands ----

def cmd_startup(argv):
    runs = int(argv[argv.index("--runs") + 1])
    connected = "--connected" in argv
    cmd = argv[argv.index("--") + 1:]
    sock_path = "/tmp/avsd-bench-notify.%d" % os.getpid()
    out = []
    for _ in range(runs):
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(sock_path)
        env = dict(os.environ, NOTIFY_SOCKET=sock_path)
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = conn = None
        s.settimeout(10)
        try:
            while ready is None:
                msg = s.recv(4096)
                if b"READY=1" in msg.split(b"\n"):
                    ready = (time.perf_counter() - t0) * 1000
        except socket.timeout:
            pass
        if connected and ready is not None:
            bus = Bus()
            if wait_state(bus, "connected", prop="Connection", timeout=20, every=0.002):
                conn = (time.perf_counter() - t0) * 1000
            bus.sock.close()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        s.close()
        out.append({"ready_ms": ready, "connected_ms": conn})
        time.sleep(0.2)
    os.unlink(sock_path)
    print(json.dumps({"runs": out, "ready": stats(r["ready_ms"] for r in out),
                      "connected": stats(r["connected_ms"] for r in out)}))


def cmd_sample(argv):
    pid, secs = int(argv[0]), float(argv[1])
    th0, t0 = threads(pid), ticks(pid)
    w0 = time.monotonic()
    time.sleep(secs)
    th1, t1 = threads(pid), ticks(pid)
    wall = time.monotonic() - w0
    ns, sw, ended, began = thread_deltas(th0, th1)
    hz = os.sysconf("SC_CLK_TCK")
    print(json.dumps({
        "secs": wall,
        "cpu_pct": ns / 1e9 / wall * 100,
        "cpu_pct_ticks": (t1 - t0) / hz / wall * 100,
        "wakeups_per_s": sw / wall,
        "threads_ended": ended,
        "threads_began": began,
        **proc_status(pid),
    }))


def cmd_proc(argv):
    print(json.dumps(proc_status(int(argv[0]))))


LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z")


def recognize_arrivals(log):
    """Wall-clock seconds of each Recognize arrival logged by avs-sim avs."""
    out = []
    with open(log, errors="replace") as f:
        for line in f:
            if "event=SpeechRecognizer.Recognize" in line or "event=\"SpeechRecognizer.Recognize\"" in line:
                m = LOG_TS.match(line.strip())
                if m:
                    out.append(_epoch(m.group(1)))
    return out


def _epoch(ts):
    """Unix seconds of a log line's UTC time, to the microsecond."""
    sec, _, frac = ts.partition(".")
    base = datetime.strptime(sec, "%Y-%m-%dT%H:%M:%S")
    return (base - datetime(1970, 1, 1)).total_seconds() + float("0." + (frac or "0"))


def cmd_dialogs(argv):
    pid, control, n, log = int(argv[0]), argv[1].rstrip("/"), int(argv[2]), argv[3]
    checkpoint = int(argv[4]) if len(argv) > 4 else 10
    budget = float(argv[5]) if len(argv) > 5 else 1e9
    avsd_log = argv[6] if len(argv) > 6 else None
    # RSS and fds after these many dialogs (and after the last one).
    wanted_marks = {1, checkpoint, n} | {k for k in (100, 500) if k < n}
    started = time.monotonic()
    bus = Bus()
    base = len(http(control + "/stats")["recognizes"])
    arrivals0 = len(recognize_arrivals(log))
    taps, marks, failed = [], {}, 0
    for i in range(n):
        if not wait_state(bus, "idle", timeout=30):
            failed += 1
        t_call = time.time()
        p0 = time.perf_counter()
        try:
            bus.call(DEST, PATH, DIALOG, "Tap")
        except DBusError as e:
            print("Tap failed: %s" % e, file=sys.stderr)
            failed += 1
            time.sleep(0.5)
            continue
        p1 = time.perf_counter()
        taps.append({"call": t_call, "returned": t_call + (p1 - p0), "rtt_ms": (p1 - p0) * 1000})
        http("%s/wait?recognizes=%d&timeout_ms=30000" % (control, base + len(taps)))
        wait_state(bus, "idle", timeout=30)
        done = i + 1
        if done in wanted_marks:
            marks[str(done)] = proc_status(pid)
        if time.monotonic() - started > budget and done < n:
            print("dialogs: %d s budget spent after %d dialogs; stopping there" % (budget, done),
                  file=sys.stderr)
            marks[str(done)] = proc_status(pid)
            break
    time.sleep(0.3)  # the log line of the last Recognize
    recs = http(control + "/stats")["recognizes"][base:]
    arrivals = recognize_arrivals(log)[arrivals0:]
    sounds = answer_to_sound(avsd_log, [t["call"] for t in taps]) if avsd_log else [None] * len(taps)
    rows = []
    for k, tap in enumerate(taps):
        rec = recs[k] if k < len(recs) else {}
        arr = arrivals[k] if k < len(arrivals) else None
        to_headers = (arr - tap["returned"]) * 1000 if arr is not None else None
        first = rec.get("first_audio_ms")
        sc, ue = rec.get("stop_capture_ms"), rec.get("upload_end_ms")
        rows.append({
            "tap_rtt_ms": tap["rtt_ms"],
            "tap_to_request_ms": to_headers,
            "first_audio_ms": first,
            "tap_to_first_audio_ms": (to_headers + first) if (to_headers is not None and first is not None) else None,
            "stop_to_end_ms": (ue - sc) if (ue is not None and sc is not None) else None,
            "answer_to_sound_ms": sounds[k],
            "outcome": rec.get("outcome"),
            "record": rec,
        })
    keys = ["tap_rtt_ms", "tap_to_request_ms", "first_audio_ms", "tap_to_first_audio_ms", "stop_to_end_ms",
            "answer_to_sound_ms"]
    print(json.dumps({
        "n": len(taps), "failed": failed, "wanted": n,
        "no_upload_end": sum(1 for r in rows if r["record"] and r["record"].get("upload_end_ms") is None),
        "stream_ms": stats(r["record"].get("stream_ms") for r in rows if r["record"]),
        "outcomes": sorted({r["outcome"] or "?" for r in rows}),
        "answer_to_sound_negative": sum(1 for r in rows if (r["answer_to_sound_ms"] or 0) < 0),
        "answer_to_sound_missing": sum(1 for r in rows if r["answer_to_sound_ms"] is None) if avsd_log else None,
        "checkpoints": marks,
        **{k: stats(r[k] for r in rows) for k in keys},
        "rows": rows,
    }))


# avsd's stderr lines: "<RFC 3339 UTC time>  LEVEL [spans: ]message [fields]".
ARRIVED = "the answer's first audio bytes have arrived"
SPEAKING = re.compile(r"^\S+\s+INFO\s+(?:.*?: )?speaking$")


def answer_to_sound(log, starts):
    """Per dialog (dialog k is the stretch of avsd's log from starts[k] to
    starts[k+1]): ms from the line saying the Speak attachment's first
    bytes reached the decoder (debug) to the "speaking" line (info: the
    player's Started event, the first decoded sample handed to ALSA)."""
    arrived, speaking = [], []
    with open(log, errors="replace") as f:
        for line in f:
            line = line.strip()
            m = LOG_TS.match(line)
            if not m:
                continue
            if ARRIVED in line:
                arrived.append(_epoch(m.group(1)))
            elif SPEAKING.match(line):
                speaking.append(_epoch(m.group(1)))
    out = []
    for k, t0 in enumerate(starts):
        t1 = starts[k + 1] if k + 1 < len(starts) else float("inf")
        a = next((t for t in arrived if t0 <= t < t1), None)
        s = next((t for t in speaking if t0 <= t < t1), None)
        out.append((s - a) * 1000 if a is not None and s is not None else None)
    return out


def log_times(log, needle):
    """Wall-clock seconds of the log lines that contain `needle` (a
    string, or a compiled pattern to search for)."""
    out = []
    with open(log, errors="replace") as f:
        for line in f:
            if (needle.search(line.strip()) if hasattr(needle, "search") else needle in line):
                m = LOG_TS.match(line.strip())
                if m:
                    out.append(_epoch(m.group(1)))
    return out


def cmd_reconnects(argv):
    pid, control, m, log = int(argv[0]), argv[1].rstrip("/"), int(argv[2]), argv[3]
    checkpoint = int(argv[4]) if len(argv) > 4 else 10
    budget = float(argv[5]) if len(argv) > 5 else 1e9
    bus = Bus()
    times, marks = [], {}
    began = time.time()
    started = time.monotonic()
    for i in range(m):
        before = http(control + "/stats")["downchannels"]
        t0 = time.perf_counter()
        http(control + "/cut", method="POST")
        http("%s/wait?downchannels=%d&timeout_ms=90000" % (control, before + 1), timeout=100)
        wait_state(bus, "connected", prop="Connection", timeout=30, every=0.005)
        times.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.2)
        done = i + 1
        if done in (1, checkpoint, m):
            marks[str(done)] = proc_status(pid)
        if time.monotonic() - started > budget and done < m:
            print("reconnects: %d s budget spent after %d; stopping there" % (budget, done),
                  file=sys.stderr)
            marks[str(done)] = proc_status(pid)
            break
    time.sleep(0.2)
    # From avsd's own log: each "connecting" to the "connected" after it.
    connecting = [t for t in log_times(log, "connecting to AVS at") if t >= began]
    # The message itself, not "... not connected to AVS" in an error line.
    connected = [t for t in log_times(log, re.compile(r"\sINFO\s+(?:.*?: )?connected to AVS$")) if t >= began]
    setup = []
    for c in connecting:
        after = [t for t in connected if t >= c]
        if after:
            setup.append((after[0] - c) * 1000)
    delays = []
    with open(log, errors="replace") as f:
        for line in f:
            mm = re.search(r"reconnecting in ([0-9.]+) s", line)
            ts = LOG_TS.match(line.strip())
            if mm and ts and _epoch(ts.group(1)) >= began:
                delays.append(float(mm.group(1)) * 1000)
    print(json.dumps({"m": len(times), "wanted": m, "reconnect_ms": stats(times),
                      "setup_ms": stats(setup), "backoff_ms": stats(delays), "checkpoints": marks}))


def cmd_refusals(argv):
    control, n, log = argv[0].rstrip("/"), int(argv[1]), argv[2]
    bus = Bus()
    began = time.time()
    done = 0
    for _ in range(n):
        if not wait_state(bus, "connected", prop="Connection", timeout=30, every=0.005):
            print("refusals: avsd is not connected; stopping", file=sys.stderr)
            break
        if not wait_state(bus, "idle", timeout=30):
            print("refusals: the dialog is not idle; stopping", file=sys.stderr)
            break
        before = http(control + "/stats")["downchannels"]
        http(control + "/refuse_token?on=events", method="POST")
        try:
            bus.call(DEST, PATH, DIALOG, "Tap")
        except DBusError as e:
            print("refusals: Tap failed: %s" % e, file=sys.stderr)
            break
        http("%s/wait?downchannels=%d&timeout_ms=30000" % (control, before + 1))
        wait_state(bus, "connected", prop="Connection", timeout=30, every=0.005)
        done += 1
        time.sleep(1.0)
    time.sleep(0.2)
    # The auth actor's line: one a refusal (the supervisor logs its own too).
    refused = [t for t in log_times(log, "AVS refused the access token; asking the companion")
               if t >= began]
    connected = [t for t in log_times(log, re.compile(r"\sINFO\s+(?:.*?: )?connected to AVS$")) if t >= began]
    heal, token = [], []
    for r in refused:
        after = [t for t in connected if t >= r]
        if after:
            heal.append((after[0] - r) * 1000)
    with open(log, errors="replace") as f:
        for line in f:
            mm = re.search(r"a new access token arrived after ([0-9]+) ms", line)
            ts = LOG_TS.match(line.strip())
            if mm and ts and _epoch(ts.group(1)) >= began:
                token.append(float(mm.group(1)))
    print(json.dumps({"n": done, "wanted": n, "heal_ms": stats(heal), "token_ms": stats(token)}))


def cmd_volume(argv):
    control, n = argv[0].rstrip("/"), int(argv[1])
    bus = Bus()
    base = len([e for e in http(control + "/stats")["events"] if e["name"] == "Speaker.VolumeChanged"])
    rtt, to_avs = [], []
    for i in range(n):
        delta = -1 if i % 2 == 0 else 1
        t0 = time.perf_counter()
        bus.reply(bus.send(DEST, PATH, "org.avsd.Avs1.Speaker", "AdjustVolume",
                           raw=("i", struct.pack("<i", delta))))
        t1 = time.perf_counter()
        http("%s/wait?event=Speaker.VolumeChanged&count=%d&timeout_ms=10000" % (control, base + i + 1))
        t2 = time.perf_counter()
        rtt.append((t1 - t0) * 1000)
        to_avs.append((t2 - t0) * 1000)
    print(json.dumps({"n": n, "rtt_ms": stats(rtt), "to_avs_ms": stats(to_avs)}))


LOGIN_LINK = re.compile(r'id="login" href="([^"]+)"')


def _post_json(opener, url, obj):
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with opener.open(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read() or b"{}")


def one_login(base, ctx, product, dsn):
    """One complete login as a device and a person's browser would do it;
    the ms of each step (register, login page, login link through the LWA
    stand-in back to /authresponse, the device's token poll)."""
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                         urllib.request.HTTPCookieProcessor(CookieJar()))
    t = [time.perf_counter()]
    reg = _post_json(opener, base + "/provision/regCode", {"productId": product, "dsn": dsn})
    if "regCode" not in reg:
        raise RuntimeError("regCode: %s" % reg)
    t.append(time.perf_counter())
    with opener.open(base + "/provision/" + reg["regCode"], timeout=30) as r:
        page = r.read().decode(errors="replace")
    m = LOGIN_LINK.search(page)
    if not m:
        raise RuntimeError("no login link on the device page")
    t.append(time.perf_counter())
    press = urllib.parse.urljoin(base + "/provision/", html.unescape(m.group(1)))
    with opener.open(press, timeout=30) as r:
        r.read()
        final = r.geturl()
    if "/authresponse" not in final:
        raise RuntimeError("the login ended at %s" % final)
    t.append(time.perf_counter())
    tok = _post_json(opener, base + "/provision/accessToken", {"sessionId": reg["sessionId"]})
    if "access_token" not in tok:
        raise RuntimeError("accessToken: %s" % tok)
    t.append(time.perf_counter())
    return [(b - a) * 1000 for a, b in zip(t, t[1:])]


def cmd_logins(argv):
    base, ca, secs, workers, product = argv[0].rstrip("/"), argv[1], float(argv[2]), int(argv[3]), argv[4]
    pids = [int(p) for p in argv[5:]]
    ctx = ssl.create_default_context(cafile=ca)
    lock = threading.Lock()
    done, errors = [], []
    counter = iter(range(10 ** 9))
    end = [0.0]

    def worker():
        while time.monotonic() < end[0]:
            with lock:
                i = next(counter)
            try:
                steps = one_login(base, ctx, product, "bench-login-%d-%d" % (os.getpid(), i))
            except Exception as e:  # noqa: BLE001 (counted and reported)
                with lock:
                    errors.append(str(e)[:200])
                continue
            with lock:
                done.append(steps)

    one_login(base, ctx, product, "bench-login-warm-up")
    cpu0 = {p: ticks(p) for p in pids}
    own0 = os.times()
    w0 = time.monotonic()
    end[0] = w0 + secs
    ts = [threading.Thread(target=worker) for _ in range(workers)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    wall = time.monotonic() - w0
    own1 = os.times()
    hz = os.sysconf("SC_CLK_TCK")
    cpu = {str(p): (ticks(p) - cpu0[p]) / hz for p in pids}
    n = len(done)
    print(json.dumps({
        "workers": workers, "secs": wall, "logins": n, "errors": len(errors), "error_samples": errors[:5],
        "per_s": n / wall,
        "latency_ms": stats(sum(s) for s in done),
        "steps_ms": {name: stats(s[i] for s in done)
                     for i, name in enumerate(("register", "page", "login_link_to_authresponse", "token"))},
        "cpu_s": cpu,
        "cpu_ms_per_login": {p: c * 1000 / n for p, c in cpu.items()} if n else None,
        "client_cpu_pct": ((own1.user - own0.user) + (own1.system - own0.system)) / wall * 100,
    }))


def cmd_arecord(argv):
    device, runs = argv[0], int(argv[1])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.Popen(["arecord", "-q", "-D", device, "-f", "S16_LE", "-r", "16000", "-c", "1",
                              "-t", "raw", "--period-size=160", "--buffer-size=1600"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        data = p.stdout.read(1)
        t1 = time.perf_counter()
        p.terminate()
        p.wait()
        if data:
            times.append((t1 - t0) * 1000)
        time.sleep(0.2)
    print(json.dumps({"first_byte_ms": stats(times)}))


def cmd_h2log(argv):
    lat = []
    codes = {}
    with open(argv[0]) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                codes[parts[1]] = codes.get(parts[1], 0) + 1
                lat.append(int(parts[2]) / 1000.0)
    print(json.dumps({"latency_ms": stats(lat), "status": codes}))


# -------------------------------------------------------------- report ----

def _load(d, name):
    try:
        with open(os.path.join(d, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _tri(s, unit="ms", digits=1):
    if not s:
        return "n/a"
    f = "%%.%df" % digits
    return ("median " + f + " / p95 " + f + " / max " + f + " %s (n=%d)") % (
        s["median"], s["p95"], s["max"], unit, s["n"])


def _mib(kib):
    return "%.1f MiB" % (kib / 1024.0) if kib is not None else "n/a"


def cmd_report(argv):
    d = argv[0]
    rows = []
    add = lambda fig, val, ref="": rows.append((fig, val, ref))
    dlg = _load(d, "dialogs") or {}
    arec = _load(d, "arecord") or {}
    ping = _load(d, "ping") or {}
    ref_cap = (arec.get("first_byte_ms") or {}).get("median")
    ref_rtt = (ping.get("latency_ms") or {}).get("median")

    def ratio(s, ref):
        if s and ref:
            return " (%.1f× the reference)" % (s["median"] / ref)
        return ""

    if dlg:
        add("Tap() D-Bus call, round trip", _tri(dlg.get("tap_rtt_ms"), digits=2))
        add("Tap() return → Recognize request at the stand-in (log, headers+metadata)", _tri(dlg.get("tap_to_request_ms")))
        add("Request headers → first audio byte (stand-in's first_audio_ms)", _tri(dlg.get("first_audio_ms")))
        add("**Trigger to first audio byte** (sum of the two above)",
            _tri(dlg.get("tap_to_first_audio_ms")) + ratio(dlg.get("tap_to_first_audio_ms"), ref_cap),
            "arecord exec → first 10 ms period from the same FIFO PCM (its process start included): %s" % _tri(arec.get("first_byte_ms")))
        eos = _tri(dlg.get("stop_to_end_ms")) + ratio(dlg.get("stop_to_end_ms"), ref_rtt)
        if dlg.get("no_upload_end"):
            eos += ("; in %d of %d dialogs avsd did not end the upload after StopCapture "
                    "(audio streamed for %s)" % (dlg["no_upload_end"], dlg["n"], _tri(dlg.get("stream_ms"), digits=0)))
        add("**End of speech to end of request** (upload_end_ms − stop_capture_ms)", eos,
            "one HTTP/2 request round trip to the stand-in (h2load GET /ping, same TLS loopback): %s"
            % _tri(ping.get("latency_ms"), digits=2))
        ats = dlg.get("answer_to_sound_ms")
        val = _tri(ats)
        if dlg.get("answer_to_sound_missing"):
            val += "; %d dialogs without both log lines" % dlg["answer_to_sound_missing"]
        add("**Answer to sound**: the Speak attachment's first MP3 bytes at the decoder → first decoded "
            "sample handed to ALSA (avsd's log: \"first audio bytes have arrived\" → \"speaking\"; "
            "goal ≤ 20 ms at p95)", val,
            "the output is already open (one mixed stream for the daemon's life), so no silence "
            "lead-in drains ahead of the answer; on the first answer after start the device opens "
            "first")
    for name, label in (("startup_fresh", "no session"), ("startup_saved", "saved session")):
        st = _load(d, name)
        if st:
            add("Start-up: exec → READY=1 (%s)" % label, _tri(st.get("ready")))
            if st.get("connected"):
                add("Start-up: exec → Connection=connected (saved session, companion reachable)",
                    _tri(st.get("connected")))
    for name, label in (("idle", "idle (not logged in)"), ("connected", "idle, connected to AVS")):
        s = _load(d, name)
        if s:
            add("avsd RSS, %s" % label, _mib(s.get("VmRSS")))
            add("avsd CPU share over %.0f s, %s" % (s["secs"], label),
                "%.4f %% of a core (threads' schedstat; %.3f %% from the process's utime+stime)" % (s["cpu_pct"], s["cpu_pct_ticks"]))
            churn = ""
            if s.get("threads_ended") or s.get("threads_began"):
                churn = " (%d threads ended, %d began meanwhile; an ended one's share is missed)" % (
                    s["threads_ended"], s["threads_began"])
            add("avsd wake-ups/s, %s (context switches of its threads)" % label,
                "%.2f /s%s" % (s["wakeups_per_s"], churn))
    if dlg:
        cps = dlg.get("checkpoints", {})
        last = cps[max(cps, key=int)] if cps else {}
        add("avsd peak RSS (VmHWM) over %s dialogs" % dlg.get("n"), _mib(last.get("VmHWM")))
        for k in sorted(cps, key=int):
            add("avsd after %s dialogs: RSS / open fds / threads" % k,
                "%s / %d / %d" % (_mib(cps[k]["VmRSS"]), cps[k]["fds"], cps[k]["Threads"]))
        ks = sorted(cps, key=int)
        if "10" in cps and ks[-1] != "10":
            a, b = cps["10"], cps[ks[-1]]
            add("**Steadiness**: after 10 → after %s dialogs, RSS / open fds" % ks[-1],
                "%s → %s (%+.0f KiB) / %d → %d" % (_mib(a["VmRSS"]), _mib(b["VmRSS"]),
                                                 b["VmRSS"] - a["VmRSS"], a["fds"], b["fds"]))
        add("Dialog outcomes at the stand-in", ", ".join(dlg.get("outcomes", [])) + " (failed: %s)" % dlg.get("failed"))
    rc = _load(d, "reconnects")
    if rc:
        add("Reconnect: connecting → connected (TCP, TLS, HTTP/2, downchannel, events; avsd's log)",
            _tri(rc.get("setup_ms")))
        add("Reconnect: POST /cut → Connection=connected again, back-off included",
            _tri(rc.get("reconnect_ms"), digits=0) + "; avsd's back-off delays: %s (it resets only after "
            "60 s connected, so back-to-back cuts meet a growing, jittered delay)" % _tri(rc.get("backoff_ms"), digits=0))
        cps = rc.get("checkpoints", {})
        for k in sorted(cps, key=int):
            add("avsd after %s reconnects: RSS / open fds / threads" % k,
                "%s / %d / %d" % (_mib(cps[k]["VmRSS"]), cps[k]["fds"], cps[k]["Threads"]))
    rf = _load(d, "refusals")
    if rf:
        add("Refused token (AVS 403 to a Recognize) → connected with a new token (avsd's log; goal ≤ 3 s), "
            "%d of %d" % (rf.get("n", 0), rf.get("wanted", 0)),
            _tri(rf.get("heal_ms"), digits=0) + "; of which waiting for the new token "
            "(avsd → companion → LWA refresh): %s" % _tri(rf.get("token_ms"), digits=0))
    vol = _load(d, "volume")
    if vol:
        add("Volume: Speaker.AdjustVolume(±1) D-Bus call, round trip (%d calls; saved with fsync "
            "before it returns)" % vol["n"], _tri(vol.get("rtt_ms"), digits=2))
        add("Volume: AdjustVolume call → Speaker.VolumeChanged at the stand-in (its /wait answer, "
            "an upper bound)", _tri(vol.get("to_avs_ms"), digits=2))
    size = _load(d, "size")
    if size:
        add("avsd binary, release (stripped, fat LTO)", "%.2f MiB (%d bytes)" % (size["bytes"] / 1048576.0, size["bytes"]))
    comp = _load(d, "companion")
    if comp:
        add("Companion: POST /provision/accessToken, %d clients, h2load over HTTPS" % comp["clients"],
            "%.0f req/s; latency %s" % (comp["rps"], _tri(comp.get("latency_ms"), digits=2).replace("p95", "p95").replace(" / max", " / p99 %.2f / max" % ((comp.get("latency_ms") or {}).get("p99") or 0), 1)))
        add("Companion RSS: idle / after the load", "%s / %s" % (_mib(comp.get("rss_before")), _mib(comp.get("rss_after"))))
    lg = _load(d, "logins")
    if lg:
        cpu = lg.get("cpu_ms_per_login") or {}
        names = lg.get("pid_names") or {}
        cost = ", ".join("%s %.1f ms" % (names.get(p, p), v) for p, v in cpu.items())
        steps = lg.get("steps_ms") or {}
        add("**Complete logins per second** at the companion (register → login page → LWA stand-in, "
            "auto-approve → /authresponse → token poll; %d python3 threads, %.0f s)" % (lg["workers"], lg["secs"]),
            "%.1f logins/s (%d logins, %d errors); per login %s; steps (median): register %.1f, page %.1f, "
            "login link → /authresponse %.1f, token %.1f ms"
            % (lg["per_s"], lg["logins"], lg["errors"], _tri(lg.get("latency_ms")),
               *[((steps.get(k) or {}).get("median") or 0) for k in
                 ("register", "page", "login_link_to_authresponse", "token")]),
            "CPU per login: %s; the python3 client itself used %.0f %% of a core" % (cost, lg.get("client_cpu_pct", 0)))
        if lg.get("rss_after"):
            add("Companion RSS after the logins", _mib(lg["rss_after"]))
    mach = _load(d, "machine") or {}
    print("| figure | value | reference (same run) |")
    print("|---|---|---|")
    for fig, val, ref in rows:
        print("| %s | %s | %s |" % (fig, val, ref))
    print()
    print("Notes: the Tap → request time is from the stand-in's log line for the Recognize "
          "(wall clock, µs), written once its metadata part was read; first_audio_ms counts from the "
          "request headers, so their sum is an upper bound. The bench microphone (a FIFO fed every "
          "10 ms) has a period ready when the device opens; a sound card delivers its first period one "
          "period (10 ms) after the capture starts, so on hardware add up to 10 ms. The stand-in sends "
          "StopCapture 1 s after the first audio byte; the answer is a short MP3.")
    if mach:
        print()
        print("Machine: %s, %s cores (nproc), %s; %s. Command: `scripts/bench`."
              % (mach.get("cpu"), mach.get("nproc"), mach.get("kernel"), mach.get("date")))


def _push(control, directive):
    req = urllib.request.Request(control + "/push", method="POST",
                                 data=json.dumps({"directive": directive}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def _alert_directive(name, payload):
    return {"header": {"namespace": "Alerts", "name": name,
                       "messageId": "bench-%s-%f" % (name, time.time())},
            "payload": payload}


def _iso(secs):
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(secs))


def _wait_events(control, name, count, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            http("%s/wait?event=%s&count=%d&timeout_ms=20000" % (control, name, count), timeout=30)
            return True
        except urllib.error.HTTPError:
            pass
    return False


def _alerts_active(bus):
    return bus.get_string("org.avsd.Avs1.Alerts", "Active")


def cmd_alerts(argv):
    """alerts PID CONTROL N AVSD_LOG SECS: with N alarms a day ahead, RSS
    and wake-ups over SECS; the fire error of N timers 1.5 s apart (each
    rings one 1.2 s loop), from avsd's "rings, N ms after its time" lines;
    D-Bus Alerts.Stop() on a ringing timer, call to reply."""
    pid, control, n, log, secs = int(argv[0]), argv[1].rstrip("/"), int(argv[2]), argv[3], float(argv[4])
    out = {"alerts": n}
    base = {e: sum(1 for x in http(control + "/stats")["events"] if x["name"] == e and 200 <= x["status"] < 300)
            for e in ("Alerts.SetAlertSucceeded", "Alerts.AlertStopped", "Alerts.DeleteAlertsSucceeded")}
    def sample():
        th0, w0 = threads(pid), time.monotonic()
        time.sleep(secs)
        th1, wall = threads(pid), time.monotonic() - w0
        ns, sw, _, _ = thread_deltas(th0, th1)
        return {"secs": wall, "cpu_pct": ns / 1e9 / wall * 100, "wakeups_per_s": sw / wall,
                **proc_status(pid)}
    # The same daemon just before, with none set: the speaker's output has
    # been opened by the dialogs, so the earlier idle samples are no match.
    out["none"] = sample()
    day = int(time.time()) + 86400
    tokens = ["bench-a-%d" % i for i in range(n)]
    for i, t in enumerate(tokens):
        _push(control, _alert_directive("SetAlert", {"token": t, "type": "ALARM", "scheduledTime": _iso(day + 60 * i)}))
    _wait_events(control, "Alerts.SetAlertSucceeded", base["Alerts.SetAlertSucceeded"] + n, 120)
    time.sleep(2)
    out["scheduled"] = sample()
    _push(control, _alert_directive("DeleteAlerts", {"tokens": tokens}))
    _wait_events(control, "Alerts.DeleteAlertsSucceeded", base["Alerts.DeleteAlertsSucceeded"] + 1, 60)

    # Far enough ahead that all N are set (each SetAlert is fsynced twice)
    # before the first is due.
    first = int(time.time()) + 10 + n // 4
    timers = ["bench-t-%d" % i for i in range(n)]
    for i, t in enumerate(timers):
        # Whole seconds, as AVS sends them, 2 s apart: each rings 1.2 s.
        _push(control, _alert_directive("SetAlert", {
            "token": t, "type": "TIMER", "scheduledTime": _iso(first + 2 * i),
            "loopCount": 1, "loopPauseInMilliSeconds": 0}))
    _wait_events(control, "Alerts.AlertStopped", base["Alerts.AlertStopped"] + n, 2 * n + n // 4 + 60)
    errors = {}
    pat = re.compile(r"alert (bench-t-\d+) \(TIMER\) rings, (-?\d+) ms after its time")
    with open(log, errors="replace") as f:
        for line in f:
            m = pat.search(line)
            if m:
                errors[m.group(1)] = int(m.group(2))
    out["fire_error_ms"] = stats(list(errors.values()))

    bus = Bus()
    stops = []
    for k in range(5):
        t = "bench-stop-%d" % k
        _push(control, _alert_directive("SetAlert", {"token": t, "type": "TIMER",
                                                      "scheduledTime": _iso(int(time.time()) + 2)}))
        end = time.monotonic() + 30
        while _alerts_active(bus) != t and time.monotonic() < end:
            time.sleep(0.005)
        time.sleep(0.3)
        p0 = time.perf_counter()
        bus.call(DEST, PATH, "org.avsd.Avs1.Alerts", "Stop")
        stops.append((time.perf_counter() - p0) * 1000)
    out["stop_ms"] = stats(stops)
    print(json.dumps(out))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, argv = sys.argv[1], sys.argv[2:]
    fn = globals().get("cmd_" + cmd)
    if fn is None:
        sys.exit(__doc__)
    fn(argv)


if __name__ == "__main__":
    main()

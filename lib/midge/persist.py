# Broker persistence: retained messages and persistent sessions in one append-only journal.
# After each batch of input the driver calls sync(): changed sessions/retained topics are
# appended (one record each) and, when a PUBACK/PUBREC is waiting on them, fsync'd before the
# acknowledgement is released, so an acknowledged QoS 1/2 message survives kill -9. When the
# journal has grown well past the live state it is rewritten: new file, fsync, rename.
# A damaged file is moved aside (".corrupt") and reported; what was read before it is kept.
import os
import struct
from collections import OrderedDict

from midge.broker_sess import INFO, WARN, Msg, Session

MAGIC = b"MIDGE-DB1\n"
_R = 82  # "R" retained: topic, qos, payload   (empty payload: cleared)
_S = 83  # "S" session state
_X = 88  # "X" session gone: cid


def _fsync(f):
    f.flush()
    sync = getattr(os, "fsync", None)
    if sync is not None:
        sync(f.fileno())


class _Out:
    """Records streamed into a file through one small reusable buffer: no block the size of
    a record is ever needed (a board's fragmented heap may have none to give)."""

    def __init__(self, f, buf):
        self.f = f
        self.buf = buf
        self.i = 0
        self.n = 0  # bytes written in all

    def flush(self):
        if self.i:
            self.f.write(memoryview(self.buf)[: self.i])
            self.n += self.i
            self.i = 0

    def u(self, n, fmt=">I", size=4):
        if self.i + size > len(self.buf):
            self.flush()
        struct.pack_into(fmt, self.buf, self.i, n)
        self.i += size

    def b(self, data):
        n = len(data)
        self.u(n)
        if self.i + n > len(self.buf):
            self.flush()
            if n > len(self.buf):
                self.f.write(data)
                self.n += n
                return
        self.buf[self.i : self.i + n] = data
        self.i += n

    def record(self, kind, fields, *args):
        """One record of the ints and bytes that fields(*args) yields (called twice: the
        header's length and checksum come first)."""
        n = ck = 0
        for x in fields(*args):
            if not isinstance(x, int):
                ck += sum(x)
                n += len(x)
                x = len(x)
            ck += (x >> 24) + (x >> 16 & 255) + (x >> 8 & 255) + (x & 255)
            n += 4
        self.u(kind, ">B", 1)
        self.u(n)
        self.u(ck & 0xFFFF, ">H", 2)
        for x in fields(*args):
            if isinstance(x, int):
                self.u(x)
            else:
                self.b(x)


def _enc(t, enc):
    """str t in UTF-8; enc caches the encoded topics (queues share a few)."""
    b = enc.get(t)
    if b is None:
        b = enc[t] = t.encode()
    return b


def _retained_fields(topic, m):
    yield topic.encode()
    yield m.qos if m else 0
    yield m.payload if m else b""


def _gone_fields(cid):
    yield cid.encode()


class _Rd:
    def __init__(self, body):
        self.d = body
        self.i = 0

    def u(self):
        i = self.i
        self.i = i + 4
        if self.i > len(self.d):
            raise ValueError("record too short")
        return struct.unpack(">I", self.d[i : i + 4])[0]

    def b(self):
        n = self.u()
        i = self.i
        self.i = i + n
        if self.i > len(self.d):
            raise ValueError("field runs past its record")
        return bytes(self.d[i : i + n])

    def s(self):
        return self.b().decode()


def _session_fields(s, enc):
    yield _enc(s.cid, enc)
    yield len(s.subs)
    for f, q in s.subs.items():
        yield _enc(f, enc)
        yield q
    yield len(s.inflight)
    for pid, e in s.inflight.items():
        yield pid
        if e is None:
            yield 255  # PUBREL sent, waiting for PUBCOMP
        else:
            m, flags = e
            yield flags
            yield _enc(m.topic, enc)
            yield m.payload
    qu = s.queue or ()
    yield len(qu)
    for m, flags in qu:
        yield flags
        yield _enc(m.topic, enc)
        yield m.payload
    rx2 = s.rx2 or ()
    yield len(rx2)
    for pid in rx2:
        yield pid


def _topic(r, topics):
    t = r.s()
    return topics.setdefault(t, t)


def _read_session(r, topics):
    s = Session(r.s(), False)
    for _ in range(r.u()):
        f = r.s()
        s.subs[f] = r.u()
    n = r.u()
    if n > 1:
        s.inflight = OrderedDict()  # in send order, as written (see Core._send_inflight)
    for _ in range(n):
        pid = r.u()
        flags = r.u()
        if flags == 255:
            s.inflight[pid] = None
        else:
            s.inflight[pid] = (Msg(_topic(r, topics), r.b(), flags & 3, False), flags)
    n = r.u()
    if n:
        qu = s.queue = [None] * n  # one block of the right size, before the messages
        for k in range(n):
            flags = r.u()
            m = Msg(_topic(r, topics), r.b(), flags & 3, False)
            qu[k] = (m, flags)
            s.qbytes += len(m.payload)
    n = r.u()
    if n:
        s.rx2 = set(r.u() for _ in range(n))
    return s


class Store:
    """The broker core's persistence hook (core.store)."""

    def __init__(self, path, core, log):
        self.path = path
        self.core = core
        self.log = log
        self.dirty_s = {}  # cid -> Session or None (gone)
        self.dirty_r = {}  # topic -> Msg or None
        self.held = []  # (conn, ack bytes) released after the next fsync
        self.wbuf = bytearray(1024)  # records are written through it
        self.f = None
        self.unsynced = False
        self.size = 0
        self.live = 0

    # ---- hooks called by the core

    def retained(self, topic, m):
        self.dirty_r[topic] = m

    def session(self, s):
        self.dirty_s[s.cid] = s

    def session_gone(self, cid):
        self.dirty_s[cid] = None

    def hold(self, c, ack):
        self.held.append((c, ack))

    # ---- driver calls

    def sync(self):
        """Append what changed; fsync and release held acknowledgements. Cheap when idle."""
        if not (self.dirty_s or self.dirty_r or self.held):
            return
        dirty_r = self.dirty_r
        dirty_s = self.dirty_s
        self.dirty_r = {}
        self.dirty_s = {}
        f = self.f
        if f is None:  # closed
            return
        out = _Out(f, self.wbuf)
        for topic, m in dirty_r.items():
            out.record(_R, _retained_fields, topic, m)
        enc = {}
        for cid, s in dirty_s.items():
            if s is None or s.clean:
                out.record(_X, _gone_fields, cid)
            else:
                out.record(_S, _session_fields, s, enc)
        out.flush()
        n = out.n
        self.size += n
        self.unsynced = True
        if self.held:
            _fsync(f)
            self.unsynced = False
            send = self.core._send
            for c, ack in self.held:
                if c.closing is None:
                    send(c, ack)
            self.held = []
        if self.size > 4 * self.live + 65536:
            self.compact()

    def step(self, now):
        """Once a second: anything written without an fsync gets one."""
        self.sync()
        if self.unsynced:
            _fsync(self.f)
            self.unsynced = False

    def close(self, now):
        if self.f is not None:
            self.sync()
            _fsync(self.f)
            self.f.close()
            self.f = None

    # ---- whole file

    def compact(self):
        """Rewrite the live state into a new file (write, fsync, rename)."""
        core = self.core
        tmp = self.path + ".new"
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            out = _Out(f, self.wbuf)
            for topic, m in core.retained.items():
                if topic[:1] != "$":
                    out.record(_R, _retained_fields, topic, m)
            enc = {}
            for s in core.sessions.values():
                if not s.clean:
                    out.record(_S, _session_fields, s, enc)
            out.flush()
            n = len(MAGIC) + out.n
            _fsync(f)
        if self.f is not None:
            self.f.close()
        os.rename(tmp, self.path)
        self.f = open(self.path, "ab")
        self.size = self.live = n

    def restore(self, now):
        """Load the file into the core (missing file: empty start), then compact it.
        A journal holds many versions of a session: the first pass only finds the last one
        of each session and retained topic, the second builds just those (a board's heap
        would not hold the garbage of every older version)."""
        core = self.core
        sessions = {}
        retained = {}
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            data = None
        if data is not None:
            bad = None
            if data[: len(MAGIC)] != MAGIC:
                bad = "not a midge persistence file"
            mv = memoryview(data)
            last = {}  # (kind R or S, key) -> (kind, body)
            i = len(MAGIC)
            while bad is None and i < len(data):
                if i + 7 > len(data):
                    break  # a record cut short by a crash: never acknowledged
                kind, n, ck = struct.unpack(">BIH", mv[i : i + 7])
                body = mv[i + 7 : i + 7 + n]
                if len(body) < n:
                    break
                if sum(body) & 0xFFFF != ck or kind not in (_R, _S, _X):
                    bad = "damaged record at byte %d" % i
                    break
                try:
                    key = _Rd(body).s()
                except (ValueError, UnicodeError):
                    bad = "damaged record at byte %d" % i
                    break
                last[(_R if kind == _R else _S, key)] = (kind, body)
                i += 7 + n
            topics = {}  # one str per topic for all the queued messages
            for key, (kind, body) in last.items():
                r = _Rd(body)
                try:
                    if kind == _R:
                        t = r.s()
                        q = r.u()
                        p = r.b()
                        if p:
                            retained[t] = Msg(t, p, q, True)
                    elif kind == _S:
                        s = _read_session(r, topics)
                        sessions[s.cid] = s
                except (ValueError, UnicodeError):
                    bad = "damaged record for %r" % key[1]  # checksum right, content not
            last = body = mv = data = None
            if bad is not None:
                aside = self.path + ".corrupt"
                try:
                    os.rename(self.path, aside)
                except OSError:
                    pass
                self.log(
                    WARN, "%s: %s; moved to %s, kept what came before" % (self.path, bad, aside)
                )
        for t, m in retained.items():
            core.retained[t] = m
        for cid, s in sessions.items():
            if s is not None:
                s.gone = core.uptime(now)
                core.sessions[cid] = s
                for f, q in s.subs.items():
                    core.index.add(f, s, q)
        core.store = self
        self.compact()
        self.log(
            INFO,
            "restored %d retained messages and %d sessions from %s"
            % (len(core.retained), len(core.sessions), self.path),
        )

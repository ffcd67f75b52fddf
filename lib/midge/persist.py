# Broker persistence: retained messages and persistent sessions in one append-only journal.
# After each batch of input the driver calls sync(): what changed is appended and, when a
# PUBACK/PUBREC is waiting on it, fsync'd before the acknowledgement is released, so an
# acknowledged QoS 1/2 message survives kill -9. A session is written whole only when it is
# new or its subscriptions change; after that each change is one small record (a message
# queued or sent, a packet id acknowledged ...), so the journal grows linearly with the
# traffic. When it has grown well past the live state it is rewritten: new file, fsync,
# rename. Restoring streams the file through one small buffer: the heap holds the restored
# state, never the file. A damaged file is moved aside (".corrupt") and reported; what was
# read before the damage is kept.
import os
import struct
from collections import OrderedDict

from midge.broker_sess import INFO, WARN, Msg, Session
from midge.compat import const

MAGIC = b"MIDGE-DB1\n"
# record kinds; each record is: kind (1 byte), body length (4), body checksum (2), body
_R = const(82)  # "R" retained: topic, qos, payload   (empty payload: cleared)
_S = const(83)  # "S" a whole session
_X = const(88)  # "X" session gone: cid
_M = const(77)  # "M" message: cid, pid (0: queued; else in flight), flags, topic, payload
_O = const(79)  # "O" one change: cid, op, pid
# the changes the core reports (Core._changed(s, op, pid, entry)); 0 = the whole session
_QUEUED = const(1)  # entry appended to the queue          (an M record)
_SENT = const(2)  # entry in flight under pid            (an M record)
_MOVED = const(3)  # the queue's first entry in flight under pid
_DONE = const(4)  # pid acknowledged: out of the in-flight window
_RECD = const(5)  # pid PUBREC'd: waits for PUBCOMP
_RX2 = const(6)  # inbound QoS 2 pid received (before PUBREL)
_RX2_DONE = const(7)  # inbound QoS 2 pid released


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


def _msg_fields(cid, pid, e, enc):
    m, flags = e
    yield _enc(cid, enc)
    yield pid
    yield flags
    yield _enc(m.topic, enc)
    yield m.payload


def _op_fields(cid, op, pid):
    yield cid.encode()
    yield op
    yield pid


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


class _In:
    """A journal read through one small reusable buffer. Every field is checked against the
    end of its record (self.end); with self.ck set, the bytes read are summed into it."""

    def __init__(self, f, buf, pos):
        self.f = f
        self.buf = buf
        self.mv = memoryview(buf)
        self.i = self.n = 0  # buf[i:n]: read from the file, not yet taken
        self.pos = pos  # file offset of buf[i]
        self.end = pos
        self.want = 0
        self.ck = None

    def _fill(self):
        self.n = self.f.readinto(self.buf) or 0
        self.i = 0
        if not self.n:
            raise ValueError("file ends inside a record")

    def _need(self, k):
        if self.pos + k > self.end:
            raise ValueError("field runs past its record")

    def u(self, size=4):
        """A big-endian unsigned int of size bytes (no allocation)."""
        self._need(size)
        self.pos += size
        x = 0
        b = self.buf
        for _ in range(size):
            if self.i == self.n:
                self._fill()
            c = b[self.i]
            self.i += 1
            x = x << 8 | c
            if self.ck is not None:
                self.ck += c
        return x

    def b(self):
        n = self.u()
        self._need(n)
        i = self.i
        if n <= self.n - i:
            data = bytes(self.mv[i : i + n])
            self.i = i + n
        else:  # longer than what is buffered: one allocation of exactly its size
            self.f.seek(self.pos)
            data = self.f.read(n)
            self.i = self.n = 0
        self.pos += n
        if self.ck is not None:
            self.ck += sum(data)
        return data

    def s(self):
        return self.b().decode()

    def skip(self, n):
        self._need(n)
        self.pos += n
        if self.ck is None and n > self.n - self.i:
            self.f.seek(self.pos)
            self.i = self.n = 0
            return
        while n:
            if self.i == self.n:
                self._fill()
            j = min(self.n, self.i + n)
            if self.ck is not None:
                self.ck += sum(self.mv[self.i : j])
            n -= j - self.i
            self.i = j

    def header(self):
        """Start the next record: its kind; self.want is set to its checksum and self.end
        to its end."""
        self.end = self.pos + 7
        kind = self.u(1)
        n = self.u()
        self.want = self.u(2)
        self.end = self.pos + n
        return kind


def _topic(r, topics):
    t = r.s()
    return topics.setdefault(t, t)


def _in_flight(s, pid, e):
    d = s.inflight
    if len(d) == 1 and type(d) is dict:  # in send order, as Core._send_inflight keeps it
        d = s.inflight = OrderedDict(d)
    d[pid] = e


def _read_session(r, topics, cid):
    s = Session(cid, False)
    for _ in range(r.u()):
        f = r.s()
        s.subs[f] = r.u()
    for _ in range(r.u()):
        pid = r.u()
        flags = r.u()
        if flags == 255:
            _in_flight(s, pid, None)
        else:
            _in_flight(s, pid, (Msg(_topic(r, topics), r.b(), flags & 3, False), flags))
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


def _apply(r, s, kind, topics):
    """One M or O record onto session s, as the core made the change."""
    if kind == _M:
        pid = r.u()
        flags = r.u()
        e = (Msg(_topic(r, topics), r.b(), flags & 3, False), flags)
        if pid:
            _in_flight(s, pid, e)
        else:
            if s.queue is None:
                s.queue = []
            s.queue.append(e)
            s.qbytes += len(e[0].payload)
        return
    op = r.u()
    pid = r.u()
    if op == _MOVED:
        e = s.queue.pop(0)
        s.qbytes -= len(e[0].payload)
        if not s.queue:
            s.queue = None
            s.qbytes = 0
        _in_flight(s, pid, e)
    elif op == _DONE:
        s.inflight.pop(pid, None)
    elif op == _RECD:
        if pid in s.inflight:
            s.inflight[pid] = None
    elif op == _RX2:
        if s.rx2 is None:
            s.rx2 = set()
        s.rx2.add(pid)
    elif op == _RX2_DONE and s.rx2:
        s.rx2.discard(pid)


def _scan(r, size):
    """First pass over the whole file, every checksum checked: the offset of the last
    version of each retained topic and session. Returns (retained, sessions, end, error)."""
    rlast = {}
    slast = {}
    while r.pos < size:
        at = r.pos
        if at + 7 > size:
            break  # a record cut short by a crash: never acknowledged
        kind = r.header()
        if r.end > size:
            break
        try:
            r.ck = 0
            key = r.s()
            if kind == _R:
                r.u()  # qos
                n = r.u()  # payload length
                if n:
                    rlast[key] = at
                else:
                    rlast.pop(key, None)
                r.skip(n)
            elif kind == _S:
                slast[key] = at
            elif kind == _X:
                slast.pop(key, None)
            elif kind != _M and kind != _O:
                raise ValueError
            r.skip(r.end - r.pos)
        except (ValueError, UnicodeError):
            return rlast, slast, at, "damaged record at byte %d" % at
        if r.ck & 0xFFFF != r.want:
            return rlast, slast, at, "damaged record at byte %d" % at
    r.ck = None
    return rlast, slast, r.pos, None


class Store:
    """The broker core's persistence hook (core.store)."""

    def __init__(self, path, core, log):
        self.path = path
        self.core = core
        self.log = log
        self.dirty_s = {}  # cid -> Session or None (gone): written whole
        self.dirty_r = {}  # topic -> Msg or None
        self.ops = []  # (session, op, pid, entry): small changes, in order
        self.held = []  # (conn, ack bytes) released after the next fsync
        self.wbuf = bytearray(512)  # records are written and read through it
        self.f = None
        self.unsynced = False
        self.size = 0
        self.live = 0

    # ---- hooks called by the core

    def retained(self, topic, m):
        self.dirty_r[topic] = m

    def session(self, s, op=0, pid=0, e=None):
        """op 0: s is written whole at the next sync; else one change (the codes above),
        e the (msg, flags) entry it queued or sent."""
        if op:
            self.ops.append((s, op, pid, e))
        else:
            self.dirty_s[s.cid] = s

    def session_gone(self, cid):
        self.dirty_s[cid] = None

    def hold(self, c, ack):
        self.held.append((c, ack))

    # ---- driver calls

    def sync(self):
        """Append what changed; fsync and release held acknowledgements. Cheap when idle."""
        if not (self.dirty_s or self.dirty_r or self.ops or self.held):
            return
        dirty_r = self.dirty_r
        dirty_s = self.dirty_s
        ops = self.ops
        self.dirty_r = {}
        self.dirty_s = {}
        self.ops = []
        f = self.f
        if f is None:  # closed
            return
        out = _Out(f, self.wbuf)
        for topic, m in dirty_r.items():
            out.record(_R, _retained_fields, topic, m)
        enc = {}
        for s, op, pid, e in ops:
            if s.cid in dirty_s:
                continue  # written whole below, these changes included
            if op <= _SENT:
                out.record(_M, _msg_fields, s.cid, pid, e, enc)
            else:
                out.record(_O, _op_fields, s.cid, op, pid)
        for cid, s in dirty_s.items():
            if s is None or s.clean:
                out.record(_X, _gone_fields, cid)
            else:
                out.record(_S, _session_fields, s, enc)
        out.flush()
        self.size += out.n
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
        """Load the file into the core (missing file: empty start), then compact it. Two
        passes through one small buffer: the first checks every record and finds the last
        version of each retained topic and session, the second builds just those and
        replays the changes recorded after them."""
        core = self.core
        try:
            size = os.stat(self.path)[6]
            f = open(self.path, "rb")
        except OSError:
            f = None
        if f is not None:
            with f:
                bad = None
                if f.read(len(MAGIC)) != MAGIC:
                    bad = "not a midge persistence file"
                else:
                    r = _In(f, self.wbuf, len(MAGIC))
                    rlast, slast, end, bad = _scan(r, size)
                    f.seek(len(MAGIC))
                    r = _In(f, self.wbuf, len(MAGIC))
                    err = self._load(r, rlast, slast, end)
                    bad = bad or err
            if bad is not None:
                aside = self.path + ".corrupt"
                try:
                    os.rename(self.path, aside)
                except OSError:
                    pass
                self.log(
                    WARN, "%s: %s; moved to %s, kept what came before" % (self.path, bad, aside)
                )
        gone = core.uptime(now)
        for s in core.sessions.values():
            s.gone = gone
            for flt, q in s.subs.items():
                core.index.add(flt, s, q)
        core.store = self
        self.compact()
        self.log(
            INFO,
            "restored %d retained messages and %d sessions from %s"
            % (len(core.retained), len(core.sessions), self.path),
        )

    def _load(self, r, rlast, slast, end):
        """Second pass, up to byte end: the retained messages and sessions into the core."""
        retained = self.core.retained
        sessions = self.core.sessions
        topics = {}  # one str per topic for all the queued messages
        while r.pos < end:
            at = r.pos
            kind = r.header()
            key = None
            try:
                key = r.s()
                if kind == _R:
                    if rlast.get(key) == at:
                        q = r.u()
                        retained[key] = Msg(key, r.b(), q, True)
                elif kind == _S:
                    if slast.get(key) == at:
                        sessions[key] = _read_session(r, topics, key)
                elif kind != _X:
                    s = sessions.get(key)
                    if s is not None:
                        _apply(r, s, kind, topics)
            except (ValueError, UnicodeError, IndexError, AttributeError):
                # checksum right, content not
                return "damaged record for %r at byte %d" % (key, at)
            r.skip(r.end - r.pos)
        return None

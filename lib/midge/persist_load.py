# Broker persistence, start-up half: the journal (see persist) read back into the core.
# Two passes through one small reusable buffer: the first checks every record's checksum and
# finds the last version of each retained topic and session, the second builds just those
# and replays the single-change records written after them; the heap holds the restored
# state, never the file. Imported by Store.restore() only, and unloaded after it.
import os
from collections import OrderedDict

from midge.broker_sess import INFO, WARN, Msg, Session
from midge.compat import const
from midge.persist import MAGIC

# record kinds (as in persist)
_R = const(82)  # retained: topic, qos, payload   (empty payload: cleared)
_S = const(83)  # a whole session
_X = const(88)  # session gone: cid
_M = const(77)  # message: cid, pid (0: queued; else in flight), flags, topic, payload
_O = const(79)  # one change: cid, op, pid
# the changes an O record carries (the core's codes, Core._changed)
_MOVED = const(3)  # the queue's first entry in flight under pid
_DONE = const(4)  # pid acknowledged: out of the in-flight window
_RECD = const(5)  # pid PUBREC'd: waits for PUBCOMP
_RX2 = const(6)  # inbound QoS 2 pid received (before PUBREL)
_RX2_DONE = const(7)  # inbound QoS 2 pid released


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
            if len(data) < n:
                raise ValueError("file ends inside a record")
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
    version of each retained topic and session. Returns (retained, sessions, end, error):
    end is where the good records stop (before a damaged one, or one cut short)."""
    rlast = {}
    slast = {}
    at = r.pos
    while at < size:
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
        at = r.pos
    r.ck = None
    return rlast, slast, at, None


def restore(store, now):
    """Load store's file into its core (missing file: empty start), then compact it."""
    core = store.core
    try:
        size = os.stat(store.path)[6]
        f = open(store.path, "rb")
    except OSError:
        f = None
    if f is not None:
        with f:
            bad = None
            if f.read(len(MAGIC)) != MAGIC:
                bad = "not a midge persistence file"
            else:
                r = _In(f, store.wbuf, len(MAGIC))
                rlast, slast, end, bad = _scan(r, size)
                if bad is None and end < size:
                    store.log(
                        WARN,
                        "%s: the last record (byte %d) was cut short, dropped: it was never"
                        " acknowledged" % (store.path, end),
                    )
                f.seek(len(MAGIC))
                r = _In(f, store.wbuf, len(MAGIC))
                err = _load(r, core, rlast, slast, end)
                bad = bad or err
        if bad is not None:
            aside = store.path + ".corrupt"
            try:
                os.rename(store.path, aside)
            except OSError:
                pass
            store.log(WARN, "%s: %s; moved to %s, kept what came before" % (store.path, bad, aside))
    gone = core.uptime(now)
    for s in core.sessions.values():
        s.gone = gone
        for flt, q in s.subs.items():
            core.index.add(flt, s, q)
    core.store = store
    store.compact()
    store.log(
        INFO,
        "restored %d retained messages and %d sessions from %s"
        % (len(core.retained), len(core.sessions), store.path),
    )


def _load(r, core, rlast, slast, end):
    """Second pass, up to byte end: the retained messages and sessions into the core."""
    retained = core.retained
    sessions = core.sessions
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

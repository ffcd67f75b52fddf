# Broker persistence: retained messages and persistent sessions in one append-only journal.
# After each batch of input the driver calls sync(): changed sessions/retained topics are
# appended (one record each) and, when a PUBACK/PUBREC is waiting on them, fsync'd before the
# acknowledgement is released, so an acknowledged QoS 1/2 message survives kill -9. When the
# journal has grown well past the live state it is rewritten: new file, fsync, rename.
# A damaged file is moved aside (".corrupt") and reported; what was read before it is kept.
import os
import struct

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


class _W:
    def __init__(self):
        self.parts = []

    def u(self, n):
        self.parts.append(struct.pack(">I", n))

    def b(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.u(len(data))
        self.parts.append(bytes(data))

    def record(self, kind):
        body = b"".join(self.parts)
        return struct.pack(">BIH", kind, len(body), sum(body) & 0xFFFF) + body


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
        return self.d[i : i + n]

    def s(self):
        return self.b().decode()


def _session_record(s):
    w = _W()
    w.b(s.cid)
    w.u(len(s.subs))
    for f, q in s.subs.items():
        w.b(f)
        w.u(q)
    w.u(len(s.inflight))
    for pid, e in s.inflight.items():
        w.u(pid)
        if e is None:
            w.u(255)  # PUBREL sent, waiting for PUBCOMP
        else:
            m, flags = e
            w.u(flags)
            w.b(m.topic)
            w.b(m.payload)
    qu = s.queue or ()
    w.u(len(qu))
    for m, flags in qu:
        w.u(flags)
        w.b(m.topic)
        w.b(m.payload)
    rx2 = s.rx2 or ()
    w.u(len(rx2))
    for pid in rx2:
        w.u(pid)
    return w.record(_S)


def _read_session(r):
    s = Session(r.s(), False)
    for _ in range(r.u()):
        f = r.s()
        s.subs[f] = r.u()
    for _ in range(r.u()):
        pid = r.u()
        flags = r.u()
        if flags == 255:
            s.inflight[pid] = None
        else:
            s.inflight[pid] = (Msg(r.s(), r.b(), flags & 3, False), flags)
    n = r.u()
    if n:
        s.queue = []
        for _ in range(n):
            flags = r.u()
            m = Msg(r.s(), r.b(), flags & 3, False)
            s.queue.append((m, flags))
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
        parts = []
        for topic, m in self.dirty_r.items():
            w = _W()
            w.b(topic)
            w.u(m.qos if m else 0)
            w.b(m.payload if m else b"")
            parts.append(w.record(_R))
        for cid, s in self.dirty_s.items():
            if s is None or s.clean:
                w = _W()
                w.b(cid)
                parts.append(w.record(_X))
            else:
                parts.append(_session_record(s))
        self.dirty_r = {}
        self.dirty_s = {}
        data = b"".join(parts)
        f = self.f
        if f is None:  # closed
            return
        f.write(data)
        self.size += len(data)
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
        parts = [MAGIC]
        for topic, m in core.retained.items():
            if topic[:1] != "$":
                w = _W()
                w.b(topic)
                w.u(m.qos)
                w.b(m.payload)
                parts.append(w.record(_R))
        for s in core.sessions.values():
            if not s.clean:
                parts.append(_session_record(s))
        data = b"".join(parts)
        tmp = self.path + ".new"
        with open(tmp, "wb") as f:
            f.write(data)
            _fsync(f)
        if self.f is not None:
            self.f.close()
        os.rename(tmp, self.path)
        self.f = open(self.path, "ab")
        self.size = self.live = len(data)

    def restore(self, now):
        """Load the file into the core (missing file: empty start), then compact it."""
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
            i = len(MAGIC)
            while bad is None and i < len(data):
                if i + 7 > len(data):
                    break  # a record cut short by a crash: never acknowledged
                kind, n, ck = struct.unpack(">BIH", data[i : i + 7])
                body = data[i + 7 : i + 7 + n]
                if len(body) < n:
                    break
                if sum(body) & 0xFFFF != ck or kind not in (_R, _S, _X):
                    bad = "damaged record at byte %d" % i
                    break
                r = _Rd(body)
                try:
                    if kind == _R:
                        t = r.s()
                        q = r.u()
                        p = r.b()
                        retained[t] = Msg(t, p, q, True) if p else None
                    elif kind == _S:
                        s = _read_session(r)
                        sessions[s.cid] = s
                    else:
                        sessions[r.s()] = None
                except (ValueError, UnicodeError):
                    bad = "damaged record at byte %d" % i
                    break
                i += 7 + n
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
            if m is not None:
                core.retained[t] = m
        for cid, s in sessions.items():
            if s is not None:
                s.gone = now
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

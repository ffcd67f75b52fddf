# Broker persistence: retained messages and persistent sessions in one append-only journal.
# After each batch of input the driver calls sync(): what changed is appended and, when a
# PUBACK/PUBREC is waiting on it, fsync'd before the acknowledgement is released, so an
# acknowledged QoS 1/2 message survives kill -9. A session is written whole only when it is
# new or its subscriptions change; after that each change is one small record (a message
# queued or sent, a packet id acknowledged ...), so the journal grows linearly with the
# traffic. When it has grown well past the live state it is rewritten: new file, fsync,
# rename. Restoring (persist_load, loaded for it only) streams the file through one small
# buffer: the heap holds the restored state, never the file. A damaged file is moved aside
# (".corrupt") and reported; what was read before the damage is kept.
import os
import struct

from midge.broker_sess import WARN, run_once
from midge.compat import const

MAGIC = b"MIDGE-DB1\n"
# record kinds; each record is: kind (1 byte), body length (4), body checksum (2), body
_R = const(82)  # "R" retained: topic, qos, payload   (empty payload: cleared)
_S = const(83)  # "S" a whole session
_X = const(88)  # "X" session gone: cid
_M = const(77)  # "M" message: cid, pid (0: queued; else in flight), flags, topic, payload
_O = const(79)  # "O" one change: cid, op, pid (the codes: persist_load)
# the core reports a change as Core._changed(s, op, pid, entry), op 0 = the whole session;
# ops 1 (entry appended to the queue) and 2 (entry in flight under pid) carry a message
_SENT = const(2)


def _fsync(f):
    f.flush()
    sync = getattr(os, "fsync", None)
    if sync is not None:
        sync(f.fileno())


def _fsync_dir(path):
    """Put a rename itself on disk, for power loss (kill -9 needs no more than the rename).
    MicroPython's os opens no folder: there the filesystem's own commit has to do."""
    op = getattr(os, "open", None)
    if op is not None:
        fd = op(path.rsplit("/", 1)[0] if "/" in path else ".", 0)  # 0: O_RDONLY
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
        self.broken = False  # an append failed (disk full?): the file may end mid-record

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
        try:
            if self.broken:
                # never append after a partial record (restore would stop there): rewrite
                # the whole live state instead; until that works nothing is acknowledged
                self.compact()
                self.broken = False
                self.log(WARN, "persistence: %s is written again" % self.path)
                self._release()
                return
            self._append(f, dirty_r, dirty_s, ops)
            if self.size > 4 * self.live + 65536:
                self.compact()
        except OSError as e:  # disk full: the clients go on, their acknowledgements wait
            self._failed(e)

    def _failed(self, e):
        if not self.broken:
            self.broken = True
            self.log(WARN, "persistence: cannot write %s (%s): acks wait" % (self.path, e))

    def _append(self, f, dirty_r, dirty_s, ops):
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
            self._release()

    def _release(self):
        """What is written is on disk: the held acknowledgements go out."""
        self.unsynced = False
        send = self.core._send
        for c, ack in self.held:
            if c.closing is None:
                send(c, ack)
        self.held = []

    def step(self, now):
        """Append what changed and fsync anything written without one: the drivers call it
        once a second, a bridge before it acknowledges what the remote sent."""
        self.sync()
        if self.unsynced and not self.broken:
            try:
                _fsync(self.f)
                self.unsynced = False
            except OSError as e:
                self._failed(e)

    def close(self, now):
        if self.f is not None:
            self.sync()
            try:
                _fsync(self.f)
                self.f.close()
            except OSError as e:  # the disk is still full: said once (sync), no traceback
                self._failed(e)
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
        _fsync_dir(self.path)
        self.f = open(self.path, "ab")
        self.size = self.live = n

    def restore(self, now):
        """Load the file into the core (missing file: empty start), then compact it. The
        reading code is a module of its own, unloaded afterwards: a board's heap keeps
        only what the running broker needs."""
        run_once("persist_load", "restore", self, now)

# The broker without I/O: sessions, routing, retained store, wills, keepalive, $SYS, limits.
# A driver calls connect() per accepted socket, feed() with the bytes it read, closed() when
# the socket is gone and tick() now and then; after each call it writes every connection in
# take_pending(): conn.out holds the byte chunks to send, conn.closing says "close after"
# (and, if it sets send_now, in between for a publisher's ack).
# Time is always passed in (ms from compat.ticks_ms); nothing here touches a socket or clock.
from collections import OrderedDict

from midge.broker_sess import (  # noqa: F401  (WARN/INFO: drivers)
    INFO,
    WARN,
    Conn,
    Msg,
    TopicIndex,
    ack,
    peer_name,
)
from midge.compat import MICROPYTHON, const, mem_alloc, rss_bytes, ticks_add, ticks_diff

_CONNECT_TIMEOUT = const(10000)  # ms a new socket gets to send CONNECT
_SYS = "$SYS/broker/"
# session changes the store journals one by one (codes: persist_load; 0: the whole session)
_QUEUED = const(1)
_SENT = const(2)
_MOVED = const(3)
_RX2 = const(6)
VERSION = "midge 0.1.0"


def sized(n):
    """An empty dict whose table already has room for n entries (grown while the heap is
    whole: later, a fragmented heap may not have one free block of that size)."""
    d = {}
    for i in range(n):
        d[i] = None
    for i in range(n):
        del d[i]
    return d


class Core:
    """Sessions, routing, output and housekeeping; broker_proto.Broker adds the packets."""

    def __init__(self, conf=None, auth=None, log=None, now=None):
        # the defaults, built here: a module-level dict would hold its table for good
        c = {
            "allow_anonymous": None,  # None: loopback peers only
            "max_connections": -1,
            "max_inflight_messages": 20,
            # a board's heap (~128 KB) bounds what untrusted clients may grow: one packet,
            # each offline queue (~300 B of objects per message) and the retained topics;
            # 0 = no limit
            "max_queued_messages": 100 if MICROPYTHON else 1000,
            "max_queued_bytes": 16384 if MICROPYTHON else 0,
            "max_packet_size": 16384 if MICROPYTHON else 0,
            "max_retained_messages": 100 if MICROPYTHON else 0,
            "max_subscriptions": 0,
            "retain_available": True,
            "sys_interval": 10,
            "persistent_client_expiration": 0,  # s; 0 = never
            "max_write_buffer": 1 << 20,  # bytes buffered per socket before QoS 0 drops
        }
        if conf:
            c.update(conf)
        self.conf = c
        self.auth = auth
        self.log = log or (lambda level, msg: None)  # level WARN (always shown) or INFO
        self.verbose = False  # INFO lines are only formatted (and logged) when set
        self.max_inflight = c["max_inflight_messages"] or 65535
        self.max_queued = c["max_queued_messages"]
        self.max_qbytes = c["max_queued_bytes"]
        self.max_wbuf = c["max_write_buffer"]
        # retained topics kept (0: no limit, a small int); publish_sys adds its $SYS ones
        self.max_retained = c["max_retained_messages"] or 0x3FFF0000
        self.sessions = {}
        self.conns = {}
        self.index = TopicIndex()
        self.retained = {}
        self.pending = []
        # persistence hook: .retained(topic, msg or None), .session(sess, op, pid, entry),
        # .session_gone(cid)
        self.store = None
        self.durable = False
        # the driver's hook: send_now(c) writes c's output at once (the ack of the last
        # PUBLISH of a read, before the message is routed: the publisher's round trip does
        # not wait for the routing)
        self.send_now = None
        # ticks values are only compared with ticks_diff and moved with ticks_add (a board's
        # counter wraps every 2**30 ms and its ticks_diff spans only half of that): long
        # spans (uptime, session expiry) are counted in whole seconds, t0 being the tick
        # value of second `up`
        self.t0 = self.next_sys = now or 0
        self.up = 0
        self.nid = 0
        self.rx_msgs = self.tx_msgs = self.rx_bytes = self.tx_bytes = self.dropped = 0
        self.rdropped = 0  # retained messages not kept (max_retained_messages)

    # ---- driver interface

    def connect(self, peer, local, now):
        """A socket was accepted: a new Conn, or None when max_connections is reached."""
        m = self.conf["max_connections"]
        if m >= 0 and len(self.conns) >= m:
            self.log(WARN, "refused %s: max_connections (%d) reached" % (peer_name(peer), m))
            return None
        c = Conn(peer, local, now, self.conf["max_packet_size"])
        self.conns[c] = None
        return c

    def closed(self, c, now):
        """The socket closed or failed (EOF, reset, driver error)."""
        if c.closing is None:
            self._close(c, "connection lost", now, True, INFO)
        self.conns.pop(c, None)

    def take_pending(self):
        """Connections with bytes to write or waiting to be closed; clears the list."""
        p = self.pending
        if p:
            self.pending = []
            for c in p:
                c.queued = False
        return p

    def take_output(self, c):
        """The bytes queued for c as one bytes object (or None); empties c.out."""
        out = c.out
        if not out:
            return None
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        c.outn = 0
        return data

    def uptime(self, now):
        """Seconds since the core started; now must be less than ~6 days after the last tick."""
        return self.up + ticks_diff(now, self.t0) // 1000

    def tick(self, now):
        """Keepalive, connect timeouts, session expiry and $SYS; call about once a second."""
        e = ticks_diff(now, self.t0)
        if e >= 1000:
            self.up += e // 1000
            self.t0 = ticks_add(now, -(e % 1000))  # the tick value of second self.up
        for c in list(self.conns):
            if c.closing:
                continue
            idle = ticks_diff(now, c.rx)
            if c.sess is None:
                if idle > _CONNECT_TIMEOUT:
                    self._close(c, "no CONNECT within %d ms" % _CONNECT_TIMEOUT, now)
            elif c.ka and idle > c.ka:
                self._close(c, "keepalive expired (%d ms idle)" % idle, now)
        exp = self.conf["persistent_client_expiration"]
        if exp:
            for s in list(self.sessions.values()):
                if s.conn is None and self.up - s.gone >= exp:
                    if self.verbose:
                        self.log(INFO, "session %s expired" % s.cid)
                    self._drop_session(s)
        iv = self.conf["sys_interval"]
        if iv > 0 and ticks_diff(now, self.next_sys) >= 0:
            self.next_sys = ticks_add(now, iv * 1000)
            self.publish_sys(now)

    # ---- output

    def _send(self, c, b):
        c.out.append(b)
        n = len(b)
        c.outn += n
        self.tx_bytes += n
        if not c.queued:
            c.queued = True
            self.pending.append(c)

    def _close(self, c, reason, now, will=True, level=WARN):
        if c.closing is not None:
            return
        c.closing = reason
        if not c.queued:
            c.queued = True
            self.pending.append(c)
        s = c.sess
        if level == WARN or self.verbose:
            self.log(level, "closed %s (%s): %s" % (s.cid if s else "-", c.name(), reason))
        if will and c.will is not None:
            m = c.will
            c.will = None
            self._publish(c, m, now)
        if s is not None and s.conn is c:
            s.conn = None
            s.gone = self.uptime(now)
            if s.clean:
                self._drop_session(s)
            elif c.owed:  # retained messages still owed: QoS 1/2 ones wait in the session
                for t, q in c.owed:
                    self._owed_one(s, t, q)
                c.owed = None

    # ---- routing

    def _on_publish(self, c, s, p, now):
        topic = p.topic
        q = p.qos
        pid = p.pid
        self.durable = False  # set when the message reaches persistent state
        if q == 2:
            rx2 = s.rx2
            if rx2 is None:
                rx2 = s.rx2 = set()
            if pid in rx2:  # exactly once: routed already, before PUBREL
                self._send(c, ack(0x50, pid))
                return
            rx2.add(pid)
            self._changed(s, _RX2, pid)
        a = None
        if q:
            a = ack(0x40 if q == 1 else 0x50, pid)
            if self.store is None:  # the ack goes out first: the sender's round trip is shorter
                self._send(c, a)
                a = None
                if self.send_now is not None and not c.dec.pending():
                    self.send_now(c)  # the read's last packet (else: one write for the batch)
        if self.auth and not self.auth.allowed(c.user, s.cid, topic, True):
            self.log(WARN, "%s: publish to %r denied by ACL" % (s.cid, topic))
        else:
            self.rx_msgs += 1
            self._publish(c, Msg(topic, p.payload, q, p.retain), now)
        if a is not None:
            st = self.store
            if st is not None and (self.durable or st.held):
                st.hold(c, a)  # sent once the journal is on disk, after those held before
            else:
                self._send(c, a)

    def _publish(self, c, m, now):
        """Route m (from connection c, or None for the broker itself)."""
        if m.retain:
            if not m.payload:
                if self.retained.pop(m.topic, None) is not None and self.store:
                    self.store.retained(m.topic, None)
            elif self.conf["retain_available"]:
                r = self.retained
                if m.topic in r or len(r) < self.max_retained:
                    r[m.topic] = m
                    if self.store:
                        self.store.retained(m.topic, m)
                        self.durable = True
                else:  # a new topic beyond max_retained_messages: delivered, not kept
                    self.rdropped += 1
                    if self.rdropped & 1023 == 1:
                        self.log(WARN, "max_retained_messages reached: %r not kept" % m.topic)
        mq = m.qos
        for s, q in self.index.match(m.topic).items():
            f = 0
            if s.br:  # a bridge (level 0x84): not back to it, retain as published
                if c is not None and s.conn is c:
                    continue
                f = 4 if m.retain else 0
            self._deliver(s, m, q if q < mq else mq, f)

    def resume(self, c):
        """Send c the retained messages its SUBSCRIBE matched while its output has room; the
        drivers call this again when its backlog is written. So a slow reader or a small heap
        gets every retained message, a buffer's worth at a time, and never a QoS 0 one dropped
        (live QoS 0 messages are, when its output is over max_write_buffer). Each is the
        topic's retained message when it is sent: one replaced or cleared meanwhile is never
        sent after the newer value. QoS 1/2 ones wait while the session's in-flight window is
        full (its queue is in use): they follow its acknowledgements instead of overflowing
        max_queued_messages."""
        owed = c.owed
        s = c.sess
        i = 0
        while (
            i < len(owed)
            and c.backlog + c.outn <= self.max_wbuf
            and not c.closing
            and s.queue is None
        ):
            self._owed_one(s, *owed[i])
            i += 1
        del owed[:i]
        if not owed:
            c.owed = None

    def _owed_one(self, s, t, q):
        """Retained topic t, owed to s at QoS q: its message now (none if cleared meanwhile)."""
        m = self.retained.get(t)
        if m is not None:
            self._deliver(s, m, min(q, m.qos), 4)

    def _deliver(self, s, m, q, flags):
        c = s.conn
        if q == 0:
            if c is None or c.closing:
                return
            if c.backlog + c.outn > self.max_wbuf:
                self.dropped += 1
                return
            self._send(c, m.head(0, flags))
            self._send(c, m.payload)
            self.tx_msgs += 1
            return
        flags |= q
        if c is not None and s.queue is None and len(s.inflight) < self.max_inflight:
            self._send_inflight(c, s, m, flags, _SENT)
            return
        n = len(s.queue) if s.queue else 0
        if n >= self.max_queued or (
            self.max_qbytes and s.qbytes + len(m.payload) > self.max_qbytes
        ):
            self.dropped += 1
            if n == self.max_queued or self.dropped & 1023 == 1:
                self.log(
                    WARN, "%s: queue full (%d msgs, %d B), message dropped" % (s.cid, n, s.qbytes)
                )
            return
        if s.queue is None:
            s.queue = []
        e = (m, flags)
        s.queue.append(e)
        s.qbytes += len(m.payload)
        self._changed(s, _QUEUED, 0, e)

    def _send_inflight(self, c, s, m, flags, op):
        pid = s.next_pid()
        d = s.inflight
        if len(d) == 1 and type(d) is dict:
            # resent in send order (MQTT-4.6.0-1), and a MicroPython dict has no order: from
            # the second entry on an OrderedDict keeps it (a session mostly has only one)
            d = s.inflight = OrderedDict(d)
        d[pid] = e = (m, flags)
        self._changed(s, op, pid, e)
        self._send(c, m.head(flags & 3, flags & 4))
        self._send(c, bytes((pid >> 8, pid & 255)))
        self._send(c, m.payload)
        self.tx_msgs += 1

    def _drain(self, s):
        """Move queued messages into the in-flight window while there is room."""
        c = s.conn
        qu = s.queue
        if c is None or qu is None:
            return
        i = 0
        while i < len(qu) and len(s.inflight) < self.max_inflight:
            m, f = qu[i]
            s.qbytes -= len(m.payload)
            self._send_inflight(c, s, m, f, _MOVED)
            i += 1
        if i == len(qu):
            s.queue = None
            s.qbytes = 0
        elif i:
            del qu[:i]

    def _drop_session(self, s):
        for f in s.subs:
            self.index.remove(f, s)
        s.subs = {}
        if self.sessions.get(s.cid) is s:
            del self.sessions[s.cid]
        if self.store and not s.clean:
            self.store.session_gone(s.cid)

    def _changed(self, s, op=0, pid=0, e=None):
        if self.store and not s.clean:
            self.store.session(s, op, pid, e)
            self.durable = True

    # ---- $SYS

    def sys_values(self, now):
        up = self.uptime(now)
        n = 0
        for s in self.sessions.values():
            if s.conn is not None:
                n += 1
        v = [
            ("version", VERSION),
            ("uptime", "%d seconds" % up),
            ("clients/connected", n),
            ("clients/total", len(self.sessions)),
            ("messages/received", self.rx_msgs),
            ("messages/sent", self.tx_msgs),
            ("messages/dropped", self.dropped),
            ("bytes/received", self.rx_bytes),
            ("bytes/sent", self.tx_bytes),
            ("retained messages/count", len(self.retained)),
            ("retained messages/dropped", self.rdropped),
        ]
        h = mem_alloc()
        if h is not None:
            v.append(("heap/current", h))
        r = rss_bytes()
        if r is not None:
            v.append(("rss/current", r))
        return v

    def publish_sys(self, now):
        v = self.sys_values(now)
        self.max_retained = (self.conf["max_retained_messages"] or 0x3FFF0000) + len(v)
        for k, val in v:
            t = _SYS + k
            m = Msg(t, str(val).encode(), 0, False)
            self.retained[t] = m
            self._publish(None, m, now)


# the whole broker: Core plus the per-packet protocol (a module of its own, see broker_proto)
from midge.broker_proto import Broker  # noqa: E402, F401

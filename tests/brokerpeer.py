# Test helper: one client connection into a sans-I/O Broker, through the real codec.
import support
from midge import codec as C


class Peer:
    """One client connection into a Broker; bytes in and out through the real codec."""

    def __init__(self, b, cid="c", now=0, local=True, **kw):
        self.b = b
        self.c = b.connect("peer-%s" % cid, local, now)
        self.dec = C.Decoder()
        self.cid = cid
        self.stash = []
        if cid is not None:
            self.send(C.Connect(cid, **kw), now)

    def send(self, pkt, now=0):
        self.raw(C.encode(pkt), now)

    def raw(self, data, now=0):
        self.b.feed(self.c, data, now)

    def recv(self):
        data = self.b.take_output(self.c)
        out = self.stash
        self.stash = []
        if data:
            self.dec.receive_data(data)
            while True:
                p = self.dec.next_packet()
                if p is None:
                    break
                out.append(p)
        return out

    def pubs(self):
        return [p for p in self.recv() if p.type == support.PUBLISH]

    def sub(self, *filters, qos=0):
        self.send(C.Subscribe(1, [(f, qos) for f in filters]))
        return [p for p in self.recv() if p.type != support.CONNACK]

    @property
    def closed(self):
        return self.c.closing is not None


def connack(peer):
    ps = peer.recv()
    assert ps and ps[0].type == support.CONNACK, ps
    peer.stash = ps[1:]
    return ps[0]


# Shared by the QoS and the persistence tests (one module less to compile on a board).


def inflight_across_the_pid_wrap(b):
    """Persistent subscriber "s" gets m0..m5 (QoS 2 and 1 by turns) under packet ids that wrap,
    answers only m0's PUBREC, goes away; m6 and m7 are queued for it meanwhile."""
    s = Peer(b, "s", clean_session=False)
    connack(s)
    s.sub("o", qos=2)
    b.sessions["s"].pid = 65532  # the next ids: 65533, 65534, 65535, 1, 2, 3
    p = Peer(b, "p")
    for i in range(6):
        p.send(C.Publish("o", b"m%d" % i, 2 - i % 2, pid=i + 1))
    got = s.pubs()
    assert [(g.pid, g.payload) for g in got] == [
        (65533, b"m0"),
        (65534, b"m1"),
        (65535, b"m2"),
        (1, b"m3"),
        (2, b"m4"),
        (3, b"m5"),
    ]
    s.send(C.Ack(support.PUBREC, 65533))
    assert s.recv() == [C.Ack(support.PUBREL, 65533)]
    b.closed(s.c, 0)
    p.send(C.Publish("o", b"m6", 2, pid=7))
    p.send(C.Publish("o", b"m7", 1, pid=8))


def resumed_in_order(b):
    s2 = Peer(b, "s", clean_session=False)
    assert connack(s2).session_present
    got = s2.recv()
    assert got[0] == C.Ack(support.PUBREL, 65533)  # m0 is past PUBREC: its PUBREL again
    assert [(g.payload, g.dup, g.qos) for g in got[1:]] == [
        (b"m1", True, 1),
        (b"m2", True, 2),
        (b"m3", True, 1),
        (b"m4", True, 2),
        (b"m5", True, 1),
        (b"m6", False, 2),
        (b"m7", False, 1),
    ]


# A 32-bit board's tick counter: period 2**30 ms (12.4 days), ticks_diff spans +-2**29. Its
# ticks_diff reads its arguments as small ints ("they come from ticks_xx"): a value out of
# range (now + 10000 near the wrap is an mpz) gives garbage there, an error here.
BOARD_PERIOD = 1 << 30


def _board_tick(t):
    if not 0 <= t < BOARD_PERIOD:
        raise ValueError("%r is not a tick value of a 32-bit board" % (t,))
    return t


def board_ticks_add(t, delta):
    return (_board_tick(t) + delta) & (BOARD_PERIOD - 1)


def board_ticks_diff(a, b):
    h = BOARD_PERIOD >> 1
    return ((_board_tick(a) - _board_tick(b) + h) & (BOARD_PERIOD - 1)) - h


def board_clock(*modules):
    """Give modules (imported with `from midge.compat import ticks_...`) a board's tick
    arithmetic; returns the function that puts the runtime's back."""
    saved = [(m, m.ticks_add, m.ticks_diff) for m in modules]
    for m in modules:
        m.ticks_add = board_ticks_add
        m.ticks_diff = board_ticks_diff

    def restore():
        for m, add, diff in saved:
            m.ticks_add = add
            m.ticks_diff = diff

    return restore

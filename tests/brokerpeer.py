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

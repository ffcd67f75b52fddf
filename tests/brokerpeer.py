# Test helper: one client connection into a sans-I/O Broker, through the real codec.
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
        return [p for p in self.recv() if p.type == C.PUBLISH]

    def sub(self, *filters, qos=0):
        self.send(C.Subscribe(1, [(f, qos) for f in filters]))
        return [p for p in self.recv() if p.type != C.CONNACK]

    @property
    def closed(self):
        return self.c.closing is not None


def connack(peer):
    ps = peer.recv()
    assert ps and ps[0].type == C.CONNACK, ps
    peer.stash = ps[1:]
    return ps[0]

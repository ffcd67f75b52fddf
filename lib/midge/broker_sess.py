# Broker state objects: a message, a client's session and one network connection.
# Kept apart from broker_core so that each module compiles in a small MicroPython heap.
from midge import codec
from midge.compat import MICROPYTHON, const

WARN = const(1)  # log levels: always shown
INFO = const(2)  # shown with -v


def _head(topic, plen, flags, qos):
    """Fixed header + topic of a PUBLISH (the packet id and payload follow)."""
    tb = topic.encode()
    t = len(tb)
    n = 2 + t + plen + (2 if qos else 0)
    h = [0x30 | flags]
    while n > 127:  # the remaining length, 7 bits a byte
        h.append(n & 127 | 128)
        n >>= 7
    h.append(n)
    h.append(t >> 8)
    h.append(t & 255)
    return bytes(h) + tb


def ack(b0, pid):
    """An acknowledgement packet: b0 0x40 PUBACK, 0x50 PUBREC, 0x62 PUBREL, 0x70 PUBCOMP,
    0xB0 UNSUBACK (fixed header, length 2, the packet id)."""
    return bytes((b0, 2, pid >> 8, pid & 255))


class Msg:
    """One application message, shared by every subscriber, queue and the retained store."""

    def __init__(self, topic, payload, qos, retain):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.h = None  # head of the last live (retain=0) delivery, at QoS self.hq
        self.hq = 0

    def head(self, qos, retain=False, dup=False):
        if retain or dup:
            flags = qos << 1 | (1 if retain else 0) | (8 if dup else 0)
            return _head(self.topic, len(self.payload), flags, qos)
        if self.h is None or self.hq != qos:  # one cached: subscribers mostly share a QoS
            self.h = _head(self.topic, len(self.payload), qos << 1, qos)
            self.hq = qos
        return self.h


class Session:
    """What the broker remembers about a client id (outlives the socket if clean_session=0)."""

    br = False  # connected as a bridge (CONNECT level 0x84)

    def __init__(self, cid, clean):
        self.cid = cid
        self.clean = clean
        self.conn = None
        self.subs = {}  # filter -> granted qos
        # pid -> (Msg, qos | retain << 2) awaiting PUBACK/PUBREC; None after PUBREC; in send
        # order (see Core._send_inflight)
        self.inflight = {}
        self.queue = None  # type: list | None  # list of (Msg, flags) waiting for the in-flight window or the client
        self.qbytes = 0
        self.pid = 0
        self.rx2 = None  # type: set | None  # inbound QoS 2 packet ids between PUBREC and PUBREL
        self.gone = 0  # broker uptime (s) when the client went away

    def next_pid(self):
        p = self.pid
        while True:
            p = p + 1 if p < 65535 else 1
            if p not in self.inflight:
                self.pid = p
                return p


class Conn:
    """One network connection. The driver sets .io to its own transport/writer."""

    owed = None  # [(topic, qos)]: retained messages a SUBSCRIBE matched, not yet sent (resume)
    drainer = None  # the driver's task writing a backlog, if one runs
    stuck = 0  # seconds the driver has waited to write to it while it was closing

    def __init__(self, peer, local, now, max_packet):
        self.peer = peer  # the driver's address object: formatted only for a log line
        self.local = local  # peer is on loopback
        # on CPython one PUBLISH and one ack object per connection, refilled by every decode
        # (the core uses a packet before it decodes the next); a board keeps the 224 B of heap
        self.dec = codec.Decoder(max_packet, True, 64, not MICROPYTHON)
        self.out = []
        self.sess = None
        self.user = None
        self.will = None
        self.ka = 0  # keepalive x 1.5, ms
        self.rx = now
        self.closing = None  # reason string once the broker wants it closed
        self.queued = False  # in the broker's pending list
        self.outn = 0  # bytes in out (the driver zeroes it when it takes out)
        self.backlog = 0  # bytes the driver has not got onto the wire yet (>0: draining)
        self.io = None  # the driver's writer/transport
        self.task = None  # the driver's reader task, if it has one

    def name(self):
        return peer_name(self.peer)


def run_once(name, fn, *args):
    """midge.<name>.<fn>(*args), then the module is unloaded again: code needed once (the
    config parser, the journal reader) does not stay in a board's heap."""
    import sys

    import midge

    full = "midge." + name
    __import__(full)
    try:
        return getattr(sys.modules[full], fn)(*args)
    finally:
        sys.modules.pop(full, None)
        try:
            delattr(midge, name)
        except AttributeError:
            pass


def is_loopback(host):
    if isinstance(host, (bytes, bytearray)):  # MicroPython unix sockaddr_in: family, port, addr
        return len(host) >= 8 and host[4] == 127
    if isinstance(host, tuple):
        host = host[0]
    return host in ("localhost", "::1") or str(host).startswith("127.")


def peer_name(addr):
    if isinstance(addr, (bytes, bytearray)) and len(addr) >= 8:
        return "%d.%d.%d.%d:%d" % (addr[4], addr[5], addr[6], addr[7], addr[2] << 8 | addr[3])
    if isinstance(addr, tuple) and len(addr) >= 2:
        return "%s:%s" % (addr[0], addr[1])
    return str(addr)


class TopicIndex:
    """Subscriptions in a trie with '+' and '#' branches.

    A lookup visits at most a few nodes per level of the topic, however many subscriptions
    there are. Each node is a list [children, subscribers]: children maps a level to a node,
    subscribers maps a key (a session) to the granted QoS.
    """

    def __init__(self):
        self._root = [{}, {}]
        self._count = 0
        self.visits = 0  # nodes looked at by match(): a cost figure for tests and benches

    def __len__(self):
        return self._count

    def add(self, filt, key, qos):
        """Subscribe key to filt with qos; True when new, False when it replaced a QoS."""
        node = self._root
        for level in filt.split("/"):
            children = node[0]
            nxt = children.get(level)
            if nxt is None:
                nxt = children[level] = [{}, {}]
            node = nxt
        subs = node[1]
        new = key not in subs
        subs[key] = qos
        if new:
            self._count += 1
        return new

    def remove(self, filt, key):
        """Unsubscribe key from filt; True when it was subscribed. Empty branches are pruned."""
        path = []
        node = self._root
        for level in filt.split("/"):
            nxt = node[0].get(level)
            if nxt is None:
                return False
            path.append((node, level))
            node = nxt
        if key not in node[1]:
            return False
        del node[1][key]
        self._count -= 1
        while path and not node[0] and not node[1]:
            parent, level = path.pop()
            del parent[0][level]
            node = parent
        return True

    def match(self, name, out=None):
        """Every key subscribed to a filter matching name, with the highest granted QoS of
        its matching filters (overlapping subscriptions deliver once, section 3.3.5)."""
        if out is None:
            out = {}
        self._walk(self._root, name.split("/"), 0, out, name[:1] == "$")
        return out

    def _walk(self, node, levels, i, out, dollar):
        self.visits += 1
        children = node[0]
        if i == len(levels):
            _collect(node[1], out)
            h = children.get("#")  # "a/#" also matches "a"
            if h is not None:
                _collect(h[1], out)
            return
        if not (dollar and i == 0):
            h = children.get("#")
            if h is not None:
                _collect(h[1], out)
            p = children.get("+")
            if p is not None:
                self._walk(p, levels, i + 1, out, dollar)
        n = children.get(levels[i])
        if n is not None:
            self._walk(n, levels, i + 1, out, dollar)


def _collect(subs, out):
    for k in subs:
        q = subs[k]
        if out.get(k, -1) < q:
            out[k] = q

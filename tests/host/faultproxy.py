"""A TCP proxy for fault injection between an MQTT client and a real broker.

It frames the MQTT packets flowing each way and can, at a chosen packet, cut the link
(close both sockets, before or after forwarding that packet), stall it (stop forwarding,
keep the sockets open) or answer that packet itself (a refusing broker). Every packet seen
is recorded as (direction, type, dup, raw bytes).
Directions: "up" (client to broker) and "down" (broker to client). CPython only (threads).
"""

import socket
import threading


class FaultProxy:
    def __init__(self, broker_port, host="127.0.0.1"):
        self.target = (host, broker_port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.seen = []
        self.rules = []  # [direction, type, nth, action] one-shot
        self.connections = 0
        self.stalled = False
        self._pairs = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # ---------------------------------------------------------------- control

    def cut_at(self, direction, ptype, nth=1, after=True):
        """Close the link at the nth packet of ptype going `direction` (counted from now);
        after=True forwards that packet first."""
        with self.lock:
            self.rules.append([direction, ptype, self._count(direction, ptype) + nth, after])

    def stall_at(self, direction, ptype, nth=1):
        """Stop forwarding (both ways, sockets left open) at that packet, not forwarded."""
        with self.lock:
            self.rules.append([direction, ptype, self._count(direction, ptype) + nth, "stall"])

    def answer_at(self, direction, ptype, data, nth=1):
        """Answer the nth packet of ptype going `direction` with data (back to its sender)
        instead of forwarding it."""
        with self.lock:
            self.rules.append([direction, ptype, self._count(direction, ptype) + nth, data])

    def count(self, direction, ptype, dup=None):
        with self.lock:
            return self._count(direction, ptype, dup)

    def _count(self, direction, ptype, dup=None):
        return sum(
            1
            for d, t, u, _ in self.seen
            if d == direction and t == ptype and (dup is None or u == dup)
        )

    def close(self):
        self._closed = True
        self.lsock.close()
        for pair in list(self._pairs):
            self._kill(pair)

    # ---------------------------------------------------------------- plumbing

    def _accept(self):
        while not self._closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            b.settimeout(None)
            pair = [c, b]
            with self.lock:
                self.connections += 1
                self.stalled = False
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair, c, b, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, b, c, "down"), daemon=True).start()

    def _kill(self, pair):
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self.lock:
            if pair in self._pairs:
                self._pairs.remove(pair)

    def _pump(self, pair, src, dst, direction):
        buf = b""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._kill(pair)
                return
            buf += data
            while True:
                n = packet_length(buf)
                if n is None:
                    break
                pkt, buf = buf[:n], buf[n:]
                action = self._observe(direction, pkt)
                if action == "stall":
                    return  # the other pump blocks in recv; nothing more goes across
                if action is False:
                    self._kill(pair)
                    return
                out = dst
                if isinstance(action, bytes):  # answered here: the packet goes no further
                    out, pkt = src, action
                try:
                    out.sendall(pkt)
                except OSError:
                    self._kill(pair)
                    return
                if action is True:
                    self._kill(pair)
                    return

    def _observe(self, direction, pkt):
        ptype = pkt[0] >> 4
        with self.lock:
            if self.stalled:
                return "stall"
            self.seen.append((direction, ptype, bool(pkt[0] & 8) if ptype == 3 else False, pkt))
            n = self._count(direction, ptype)
            for r in self.rules:
                if r[0] == direction and r[1] == ptype and r[2] == n:
                    self.rules.remove(r)
                    if r[3] == "stall":
                        self.stalled = True
                    return r[3]
        return None


def packet_length(buf):
    """Length of the whole MQTT packet at the start of buf, or None if incomplete."""
    rl = shift = 0
    for i in range(1, min(len(buf), 5)):
        rl |= (buf[i] & 0x7F) << shift
        if buf[i] < 0x80:
            n = i + 1 + rl
            return n if len(buf) >= n else None
        shift += 7
    return None

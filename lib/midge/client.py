# Blocking/polling MQTT client: one socket, select.poll and the sans-I/O Session. Call loop()
# from a plain `while True` (or loop_forever()); nothing here sleeps on a fixed period.
# Packets made between two loop steps go out together in one write at the next step (or
# as soon as the output buffer is full; publish(..., wait=True) writes at once).
import select
import socket

from midge import compat
from midge.client_core import MQTTException as MQTTException
from midge.client_core import Session


class Client(Session):
    """MQTT 3.1.1 client for a blocking socket: Client(client_id, server="127.0.0.1",
    port=0, user=None, password=None, keepalive=60, clean_session=True, ssl=None,
    ssl_params=None, reconnect=True, max_inflight=8, queue_count=16, queue_bytes=8192,
    bufsize=256, backoff_min=500, backoff_max=30000); port 0 means 1883, or 8883 with ssl.
    See client_core.py for the rules."""

    sock = _werr = _pending = None  # _werr: a write that failed, reported at the next step

    def connect(self, timeout_ms=5000):
        """Open the link and wait for CONNACK; return session_present. Raises MQTTException
        (refused, unreachable, timed out); reconnects after this one are automatic."""
        self.connect_timeout = timeout_ms
        self._close()
        try:
            ai = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0]
            s = self.sock = socket.socket(ai[0], ai[1], ai[2])
            s.settimeout(timeout_ms / 1000)
            s.connect(ai[-1])
            compat.set_nodelay(s)
            if self.ssl:
                from midge import tls

                s = self.sock = tls.wrap(s, self)
        except (OSError, ValueError) as e:  # MicroPython's ssl: ValueError for a bad certificate
            self._close()
            raise MQTTException(
                "cannot connect to %s:%d: %s" % (self.server, self.port, str(e).strip())
            )
        compat.sock_setup(s)
        if hasattr(s, "pending"):  # an SSL socket: how many decrypted bytes wait unread
            self._pending = s.pending  # type: ignore[attr-defined]
        p = select.poll()
        p.register(s, 1)  # POLLIN
        self._ipoll = getattr(p, "ipoll", p.poll)  # ipoll allocates nothing
        self.begin(compat.ticks_ms())
        try:
            while not self.connected:
                self._step(-1)
        except OSError:
            self._close()
            raise
        self._up = True
        return self.session_present

    def _close(self):
        s = self.sock
        if self._werr:
            self._werr = None
        if s:
            self.sock = None
            try:
                s.close()
            except OSError:
                pass

    def _out(self, check=False):
        # Write out[:nout] (the Session calls this when the buffer is full). A failed write
        # is kept in _werr; a call with check (the loop's) raises it as MQTTException.
        if self.nout:
            if self._werr is None and self.sock:
                try:
                    compat.sock_write(self.sock, self.out, self.nout)
                except OSError as e:
                    self._werr = e
            self.sent(compat.ticks_ms())
        if check and self._werr is not None:
            raise MQTTException("connection lost: %s" % self._werr)

    def _step(self, timeout):
        # Send what is due, wait for input up to timeout ms (-1: until a timer is due), read
        # and handle it. Raises MQTTException when the link is broken.
        t = self.tick(compat.ticks_ms())
        self._out(True)
        if t >= 0 and (timeout < 0 or t < timeout):
            timeout = t
        if not (self._pending and self._pending()):
            for _ in self._ipoll(timeout):
                break
            else:
                return 0
        try:
            n = compat.sock_readinto(self.sock, self._dec.write_buffer())
        except OSError as e:
            self._werr = e
            n = self._out(True)  # raises
        if not n:
            raise MQTTException("broker closed the connection")
        self._dec.commit(n)
        n = self.handle(compat.ticks_ms())
        self._out(True)
        return n

    def loop(self, timeout_ms=0):
        """One bounded step: send what is queued, wait up to timeout_ms for input, deliver
        messages, keep the link alive, reconnect when it is due. Returns the number of
        messages delivered."""
        try:
            if self.sock:
                return self._step(timeout_ms)
            if not self._up:
                raise MQTTException("not connected")
            w = self.tick(compat.ticks_ms())
            if 0 <= timeout_ms < w:
                compat.sleep_ms(timeout_ms)
                return 0
            compat.sleep_ms(w)
            self.reconnects += 1
            Client.connect(self, self.connect_timeout)
        except MQTTException as e:
            # The link broke: close it, remember why, and plan a reconnect (or re-raise).
            self._close()
            self.last_error = str(e)
            self.lost(compat.ticks_ms())
            if not (self.reconnect and self._up):
                self._up = False
                raise
        return 0

    def loop_forever(self):
        """Run until disconnect() (from a handler) or, without reconnect, an error."""
        while self._up:
            self.loop(60000)

    def _until(self, pid, timeout_ms, filt=None):
        # Send what is queued, then loop until packet pid is acknowledged; return what
        # Session._left says then.
        self.loop(0)
        t0 = compat.ticks_ms()
        while True:
            r = self._left(pid, timeout_ms, compat.ticks_diff(compat.ticks_ms(), t0), filt)
            if r is None or r >= 0:
                return r
            self.loop(-r)

    def publish(self, topic, payload, qos=0, retain=False, wait=False, timeout_ms=30000):
        """Send a message; return its packet id (0 for QoS 0). It goes out at the next
        loop() (or before, when the output buffer fills up). QoS 1/2 messages are queued and
        retransmitted until acknowledged, across reconnects. wait=True writes at once and,
        for QoS 1/2, returns once PUBACK/PUBCOMP arrived (MQTTException after timeout_ms;
        the message stays queued). When the queue is full, this waits for acknowledgements
        while connected and raises MQTTException while offline."""
        while True:
            pid = self.put(topic, payload, qos, retain)
            if pid >= 0:
                break
            self._until(self._q[1][0], timeout_ms)
        if wait:
            self._until(pid, timeout_ms)
        elif self._werr is not None:
            self.loop(0)  # a write failed: reconnect
        return pid

    def subscribe(self, filt, qos=0, handler=None, timeout_ms=10000):
        """Subscribe (kept across reconnects); handler(topic, payload, msg) gets this
        filter's messages. Connected, waits for SUBACK and returns the granted QoS
        (MQTTException when the broker refuses); offline, returns None."""
        pid = self.sub(filt, qos, handler)
        if pid:
            return self._until(pid, timeout_ms, filt)

    def unsubscribe(self, filt, timeout_ms=10000):
        pid = self.unsub(filt)
        if pid:
            self._until(pid, timeout_ms)

    def disconnect(self):
        """Send DISCONNECT (the will is not published) and close; no reconnect after it."""
        self._up = False
        self.end()
        try:
            self._out(True)
        except MQTTException:
            pass
        self._close()

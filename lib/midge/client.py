# Blocking/polling MQTT client: one socket, select.poll and the sans-I/O Session. Call loop()
# from a plain `while True` (or loop_forever()); nothing here sleeps on a fixed period.
# Packets made between two loop steps go out together in one write at the next step (or
# as soon as the output buffer is full; publish(..., wait=True) writes at once).
import select
import socket

from midge.client_core import CONNECTED, MQTTException, Session
from midge.compat import (
    set_nodelay,
    sleep_ms,
    sock_readinto,
    sock_setup,
    sock_write,
    ticks_diff,
    ticks_ms,
)

__all__ = ("Client", "MQTTException")


class Client(Session):
    """MQTT 3.1.1 client for a blocking socket: Client(client_id, server="127.0.0.1",
    port=1883, user=None, password=None, keepalive=60, clean_session=True, ssl=None,
    ssl_params=None, reconnect=True, max_inflight=8, queue_count=16, queue_bytes=8192,
    bufsize=256, backoff_min=500, backoff_max=30000); see client_core.py for the rules."""

    sock = None
    _werr = None  # a write that failed, reported at the next step

    def connect(self, timeout_ms=5000):
        """Open the link and wait for CONNACK; return session_present. Raises MQTTException
        (refused, unreachable, timed out); reconnects after this one are automatic."""
        self.connect_timeout = timeout_ms
        self._open()
        self._up = True
        return self.session_present

    def _open(self):
        self._close()
        try:
            ai = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0]
            s = self.sock = socket.socket(ai[0], ai[1], ai[2])
            s.settimeout(self.connect_timeout / 1000)
            s.connect(ai[-1])
            set_nodelay(s)
            if self.ssl:
                from midge import tls

                host = self.ssl_params.get("server_hostname", self.server)
                s = self.sock = tls.context(self.ssl, self.ssl_params).wrap_socket(
                    s, server_hostname=host
                )
        except (OSError, ValueError) as e:  # MicroPython's ssl: ValueError for a bad certificate
            self._close()
            raise MQTTException(
                "cannot connect to %s:%d: %s" % (self.server, self.port, str(e).strip())
            )
        sock_setup(s)
        self._pending = getattr(s, "pending", None)  # an SSL socket's decrypted, unread bytes
        p = select.poll()
        p.register(s, select.POLLIN)
        self._ipoll = getattr(p, "ipoll", p.poll)  # ipoll allocates nothing
        self._werr = None
        self.begin(ticks_ms())
        try:
            while self.state != CONNECTED:
                self._step(-1)
        except OSError:
            self._close()
            raise

    def _close(self):
        s = self.sock
        if s is not None:
            self.sock = None
            try:
                s.close()
            except OSError:
                pass

    def _out(self):
        if self._werr is None and self.sock is not None:
            try:
                sock_write(self.sock, self.out, self.nout)
            except OSError as e:
                self._werr = e
        self.sent(ticks_ms())

    def _flush(self):
        if self.nout:
            self._out()
        if self._werr is not None:
            raise MQTTException("connection lost: %s" % self._werr)

    def _step(self, timeout):
        # Send what is due, wait for input up to timeout ms (-1: until a timer is due), read
        # and handle it. Raises MQTTException when the link is broken.
        t = self.tick(ticks_ms())
        self._flush()
        if t >= 0 and (timeout < 0 or t < timeout):
            timeout = t
        ready = self._pending is not None and self._pending()
        if not ready:
            for _ in self._ipoll(timeout):
                ready = True
        if not ready:
            return 0
        try:
            n = sock_readinto(self.sock, self._dec.write_buffer())
        except OSError as e:
            raise MQTTException("connection lost: %s" % e)
        if not n:
            raise MQTTException("broker closed the connection")
        self._dec.commit(n)
        n = self.handle(ticks_ms())
        self._flush()
        return n

    def _fail(self, e):
        # The link broke: close it, remember why, and plan a reconnect (or re-raise).
        self._close()
        self.last_error = str(e)
        self.lost(ticks_ms())
        if not (self.reconnect and self._up):
            self._up = False
            raise e

    def loop(self, timeout_ms=0):
        """One bounded step: send what is queued, wait up to timeout_ms for input, deliver
        messages, keep the link alive, reconnect when it is due. Returns the number of
        messages delivered."""
        try:
            if self.sock is not None:
                return self._step(timeout_ms)
            if not self._up:
                raise MQTTException("not connected")
            w = self.retry_in(ticks_ms()) or 0
            if 0 <= timeout_ms < w:
                sleep_ms(timeout_ms)
                return 0
            sleep_ms(w)
            self.reconnects += 1
            self._open()
        except MQTTException as e:
            self._fail(e)
        return 0

    def _send(self):
        try:
            self._flush()
        except MQTTException as e:
            self._fail(e)

    def loop_forever(self):
        """Run until disconnect() (from a handler) or, without reconnect, an error."""
        while self._up:
            self.loop(60000)

    def _until(self, kind, arg, timeout_ms):
        # Send what is queued, then loop until the wait `kind` is over (see Session._waiting).
        self._send()
        t0 = ticks_ms()
        while True:
            left = self._waiting(kind, arg, timeout_ms, ticks_diff(ticks_ms(), t0))
            if not left:
                return
            self.loop(left)

    def publish(self, topic, payload, qos=0, retain=False, wait=False, timeout_ms=30000):
        """Send a message; return its packet id (0 for QoS 0). It goes out at the next
        loop() (or before, when the output buffer fills up). QoS 1/2 messages are queued and
        retransmitted until acknowledged, across reconnects. wait=True writes at once and,
        for QoS 1/2, returns once PUBACK/PUBCOMP arrived (MQTTException after timeout_ms;
        the message stays queued). When the queue is full, this waits for acknowledgements
        while connected and raises MQTTException while offline."""
        if qos and self._n and self.sock is not None:
            n = self._size(topic, payload)
            if not self.room(n):
                self._until(0, n, timeout_ms)
        pid = self.put(topic, payload, qos, retain)
        if wait:
            self._until(1, pid, timeout_ms)
        elif self._werr is not None:
            self._send()
        return pid

    def subscribe(self, filt, qos=0, handler=None, timeout_ms=10000):
        """Subscribe (kept across reconnects); handler(topic, payload, msg) gets this
        filter's messages. Connected, waits for SUBACK and returns the granted QoS
        (MQTTException when the broker refuses); offline, returns None."""
        pid = self.sub(filt, qos, handler)
        if pid:
            self._until(2, pid, timeout_ms)
            return self._granted(filt, pid)

    def unsubscribe(self, filt, timeout_ms=10000):
        pid = self.unsub(filt)
        if pid:
            self._until(3, pid, timeout_ms)

    def disconnect(self):
        """Send DISCONNECT (the will is not published) and close; no reconnect after it."""
        self._up = False
        self.end()
        try:
            self._flush()
        except MQTTException:
            pass
        self._close()

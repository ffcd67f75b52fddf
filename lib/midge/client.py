# Blocking/polling MQTT client: one socket, select.poll and the sans-I/O Session. Call loop()
# from a plain `while True` (or loop_forever()); nothing here sleeps on a fixed period.
import select
import socket

from midge import codec, topics
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

__all__ = ("Client", "MQTTException", "tls_context")


def tls_context(ssl, params):
    """The SSLContext for the `ssl`/`ssl_params` arguments: an SSLContext is used as given;
    True builds a client context verifying the server against params["cafile"] (or the
    system store where the runtime has one; MicroPython has none, so no CA file means no
    verification there)."""
    if hasattr(ssl, "wrap_socket"):
        return ssl
    import ssl as _ssl

    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    cafile = params.get("cafile") or params.get("ca_certs")
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
        ctx.verify_mode = _ssl.CERT_REQUIRED
    elif hasattr(ctx, "load_default_certs"):
        ctx.load_default_certs()
    else:
        ctx.verify_mode = _ssl.CERT_NONE
    return ctx


class Client:
    """MQTT 3.1.1 client for a blocking socket; see lib/midge/client_core.py for the
    session rules. Extra keyword arguments (max_inflight, queue_count, queue_bytes,
    bufsize, backoff_min, backoff_max) go to the Session."""

    def __init__(
        self,
        client_id,
        server="127.0.0.1",
        port=1883,
        user=None,
        password=None,
        keepalive=60,
        clean_session=True,
        ssl=None,
        ssl_params=None,
        reconnect=True,
        **options,
    ):
        self.core = Session(client_id, user, password, keepalive, clean_session, **options)
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.ssl = ssl
        self.ssl_params = ssl_params or {}
        self.reconnect = reconnect
        self.sock = None
        self.last_error = None  # why the link last broke (str)
        self.reconnects = 0
        self._up = False  # between connect() and disconnect()
        self._pending = None  # SSL socket's count of decrypted, unread bytes
        self._sub = None  # last SUBACK/UNSUBACK
        self._poll = select.poll()
        self._ipoll = getattr(self._poll, "ipoll", self._poll.poll)  # ipoll allocates nothing

    @property
    def connected(self):
        return self.core.state == CONNECTED

    def set_will(self, topic, payload, qos=0, retain=False):
        topics.check_topic(topic)
        self.core.will = (topic, payload, qos, retain)

    def set_callback(self, fn):
        """fn(topic, payload, msg) for messages no per-filter handler took."""
        self.core.callback = fn

    def connect(self, timeout_ms=5000):
        """Open the link and wait for CONNACK; return session_present. Raises MQTTException
        (refused, unreachable, timed out); reconnects after this one are automatic."""
        self.core.connect_timeout = timeout_ms
        self._open()
        self._up = True
        return self.core.session_present

    def _open(self):
        self._close()
        core = self.core
        try:
            ai = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0]
        except OSError as e:
            raise MQTTException("cannot resolve %r: %s" % (self.server, e))
        s = self.sock = socket.socket(ai[0], ai[1], ai[2])
        try:
            s.settimeout(core.connect_timeout / 1000)
            s.connect(ai[-1])
            set_nodelay(s)
            if self.ssl:
                host = self.ssl_params.get("server_hostname", self.server)
                s = self.sock = tls_context(self.ssl, self.ssl_params).wrap_socket(
                    s, server_hostname=host
                )
        except OSError as e:
            self._close()
            raise MQTTException("cannot connect to %s:%d: %s" % (self.server, self.port, e))
        sock_setup(s)
        self._pending = getattr(s, "pending", None)
        self._poll.register(s, select.POLLIN)
        core.connect(ticks_ms())
        try:
            self._flush()
            while core.state != CONNECTED:
                self._step(-1)
        except OSError:
            self._close()
            raise

    def _close(self):
        s = self.sock
        if s is not None:
            self.sock = None
            try:
                self._poll.unregister(s)
            except (OSError, KeyError, ValueError):
                pass
            try:
                s.close()
            except OSError:
                pass

    def _step(self, timeout):
        # Wait for input up to timeout ms (-1: until a timer is due), read and handle it,
        # run the timers, send what is due. Raises MQTTException when the link is broken.
        core = self.core
        t = core.timeout(ticks_ms())
        if t >= 0 and (timeout < 0 or t < timeout):
            timeout = t
        n = 0
        ready = self._pending is not None and self._pending()
        if not ready:
            for _ in self._ipoll(timeout):
                ready = True
        if ready:
            n = self._read()
        core.tick(ticks_ms())
        self._flush()
        return n

    def _read(self):
        core = self.core
        try:
            n = sock_readinto(self.sock, core.read_buffer())
        except OSError as e:
            raise MQTTException("connection lost: %s" % e)
        if not n:
            raise MQTTException("broker closed the connection")
        core.commit(n)
        count = 0
        while True:
            ev = core.next_event(ticks_ms())
            if ev is None:
                return count
            t = ev.type
            if t == codec.PUBLISH:
                core.dispatch(ev)
                count += 1
            elif t == codec.SUBACK or t == codec.UNSUBACK:
                self._sub = ev

    def _flush(self):
        core = self.core
        while core.nout and self.sock is not None:
            try:
                sock_write(self.sock, core.out, core.nout)
            except OSError as e:
                raise MQTTException("connection lost: %s" % e)
            core.sent(ticks_ms())

    def _fail(self, e):
        # The link broke: close it, remember why, and plan a reconnect (or re-raise).
        self._close()
        self.last_error = str(e)
        self.core.lost(ticks_ms())
        if not (self.reconnect and self._up):
            self._up = False
            raise e

    def loop(self, timeout_ms=0):
        """One bounded step: wait up to timeout_ms for input, deliver messages, keep the link
        alive, reconnect when it is due. Returns the number of messages delivered."""
        try:
            if self.sock is not None:
                return self._step(timeout_ms)
            if not self._up:
                raise MQTTException("not connected")
            w = self.core.retry_in(ticks_ms())
            if timeout_ms >= 0 and w > timeout_ms:
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

    def _until(self, t0, timeout_ms, what):
        left = timeout_ms - ticks_diff(ticks_ms(), t0)
        if left <= 0:
            raise MQTTException("timed out waiting for %s after %d ms" % (what, timeout_ms))
        self.loop(left)

    def publish(self, topic, payload, qos=0, retain=False, wait=False, timeout_ms=30000):
        """Send a message; return its packet id (0 for QoS 0). QoS 1/2 messages are queued
        and retransmitted until acknowledged, across reconnects; with wait=True this returns
        once PUBACK/PUBCOMP arrived (MQTTException after timeout_ms; the message stays
        queued). When the queue is full, this waits for acknowledgements while connected
        and raises MQTTException while offline."""
        core = self.core
        if qos and self.sock is not None:
            t0 = ticks_ms()
            while core.queued() and not core.room(len(topic) + len(payload)):
                self._until(t0, timeout_ms, "room in the publish queue")
        pid = core.publish(topic, payload, qos, retain)
        self._send()
        if wait and pid:
            t0 = ticks_ms()
            while core.pending(pid):
                self._until(t0, timeout_ms, "PUBACK" if qos == 1 else "PUBCOMP")
        return pid

    def _answer(self, pid, what, timeout_ms):
        self._send()
        t0 = ticks_ms()
        while self.sock is not None and not (self._sub is not None and self._sub.pid == pid):
            self._until(t0, timeout_ms, what)
        return self._sub if self.sock is not None else None

    def subscribe(self, filt, qos=0, handler=None, timeout_ms=10000):
        """Subscribe (kept across reconnects); handler(topic, payload, msg) gets this
        filter's messages. Connected, waits for SUBACK and returns the granted QoS
        (MQTTException when the broker refuses); offline, returns None."""
        pid = self.core.subscribe(filt, qos, handler)
        if not pid:
            return None
        ack = self._answer(pid, "SUBACK", timeout_ms)
        if ack is None:
            return None
        if ack.codes[0] == 0x80:
            self.core.forget(filt)
            raise MQTTException("subscription to %r refused by the broker" % filt)
        return ack.codes[0]

    def unsubscribe(self, filt, timeout_ms=10000):
        pid = self.core.unsubscribe(filt)
        if pid:
            self._answer(pid, "UNSUBACK", timeout_ms)

    def ping(self):
        self.core.ping()
        self._send()

    def disconnect(self):
        """Send DISCONNECT (the will is not published) and close; no reconnect after it."""
        self._up = False
        self.core.disconnect()
        try:
            self._flush()
        except MQTTException:
            pass
        self._close()

# The MQTT 3.1.1 client session without I/O (the h11 model): bytes in through receive_data()
# or read_buffer()/commit(), packets out of next_event(), bytes to send in `out[:nout]`,
# time passed in as ticks_ms integers. The drivers (client.py, aclient.py) own the sockets.
#
# Outgoing QoS 1/2 messages (and messages published while offline) wait in one bounded
# queue kept in publish order in preallocated lists; at most `max_inflight` of them are on
# the wire at once. They hold references to the caller's topic/payload (immutable ones; a
# bytearray payload is copied), so publishing allocates nothing on MicroPython.
import random

from midge import codec, topics
from midge.compat import const, ticks_diff

DISCONNECTED = const(0)
CONNECTING = const(1)
CONNECTED = const(2)

# queue entry state bits (besides the QoS in bits 0-1)
_RETAIN = const(4)
_SENT = const(8)  # on the wire, waiting for PUBACK/PUBREC (or PUBCOMP once _REL)
_REL = const(16)  # PUBREC received, PUBREL sent
_DUP = const(32)  # sent before, on an earlier connection


class MQTTException(OSError):
    """Everything that goes wrong in the client, with a message saying what happened.

    An OSError, so code written for umqtt (`except OSError:`) keeps working.
    """


class Session:
    """One client's MQTT state across connections: queue, in-flight window, QoS 2 ids,
    subscriptions, keepalive and reconnect timing."""

    def __init__(
        self,
        client_id,
        user=None,
        password=None,
        keepalive=60,
        clean_session=True,
        max_inflight=8,
        queue_count=16,
        queue_bytes=8192,
        bufsize=256,
        connect_timeout=5000,
        backoff_min=500,
        backoff_max=30000,
    ):
        self.client_id = client_id
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.will = None
        self.max_inflight = max_inflight
        self.queue_bytes = queue_bytes
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.bufsize = bufsize
        self.out = bytearray(bufsize)
        self._omv = memoryview(self.out)
        self.nout = 0
        self.state = DISCONNECTED
        self.session_present = False
        self.callback = None
        self.subs = []  # [filter, qos, handler, sent] in subscription order
        self._unsubs = []  # filters unsubscribed while offline
        self._handlers = 0
        self._qos2_in = []  # packet ids of QoS 2 messages delivered, waiting for PUBREL
        self.dropped = 0  # QoS 0 messages dropped from a full offline queue
        self._st = [0] * queue_count
        self._pid = [0] * queue_count
        self._top = [None] * queue_count
        self._pay = [None] * queue_count
        self._n = 0
        self._qb = 0
        self._lastpid = 0
        self._ltopic = self._ltb = None
        self._tries = 0
        self._retry_at = 0
        self._ping = False
        self._rx = self._tx = self._t0 = 0
        self._dec = None

    # ------------------------------------------------------------ connection

    def connect(self, now):
        """Start a connection (the transport is open): CONNECT goes into the output."""
        self._dec = codec.Decoder(bufsize=self.bufsize, reuse=True)
        self.nout = 0
        self.state = CONNECTING
        self._ping = False
        self._rx = self._tx = self._t0 = now
        w = self.will or (None, None, 0, False)
        self._append(
            codec.encode(
                codec.Connect(
                    self.client_id,
                    self.clean_session,
                    self.keepalive,
                    self.user,
                    self.password,
                    w[0],
                    w[1],
                    w[2],
                    w[3],
                )
            )
        )

    def disconnect(self):
        """A clean goodbye: DISCONNECT goes into the output; no reconnect after it."""
        if self.state == CONNECTED:
            self._append(codec.DISCONNECT_BYTES)
        self.state = DISCONNECTED
        self._retry_at = None

    def lost(self, now):
        """The transport broke: forget the connection, plan the next attempt (backoff with
        jitter); the queue, in-flight messages and subscriptions stay."""
        self.state = DISCONNECTED
        self.nout = 0
        self._dec = None
        d = min(self.backoff_max, self.backoff_min << min(self._tries, 16))
        self._tries += 1
        self._retry_at = now + d // 2 + random.getrandbits(16) * (d // 2) // 65535

    def retry_in(self, now):
        """ms until the next reconnect attempt is due (0: now; None: not planned)."""
        if self._retry_at is None:
            return None
        return max(0, ticks_diff(self._retry_at, now))

    def timeout(self, now):
        """ms until tick() has something to do; -1 when nothing is timed."""
        if self.state == CONNECTING:
            return max(0, self.connect_timeout - ticks_diff(now, self._t0))
        if self.state != CONNECTED or not self.keepalive:
            return -1
        ka = self.keepalive * 1000
        rx = ticks_diff(now, self._rx)
        t = ka * 3 // 2 - rx
        if not self._ping:
            t = min(t, ka - rx, ka - ticks_diff(now, self._tx))
        return max(0, t)

    def tick(self, now):
        """Timers: PINGREQ when idle; MQTTException when CONNACK or the broker is overdue."""
        if self.state == CONNECTING:
            if ticks_diff(now, self._t0) >= self.connect_timeout:
                raise MQTTException(
                    "timed out waiting for CONNACK after %d s" % (self.connect_timeout // 1000)
                )
        elif self.state == CONNECTED and self.keepalive:
            ka = self.keepalive * 1000
            rx = ticks_diff(now, self._rx)
            if rx >= ka * 3 // 2:
                raise MQTTException(
                    "no answer from the broker for %d s (keepalive %d s)"
                    % (rx // 1000, self.keepalive)
                )
            if not self._ping and (rx >= ka or ticks_diff(now, self._tx) >= ka):
                self._append(codec.PINGREQ_BYTES)
                self._ping = True

    def ping(self):
        self._append(codec.PINGREQ_BYTES)

    def sent(self, now):
        """The driver wrote out[:nout]; the next queued message may now be in out."""
        self.nout = 0
        self._tx = now
        self._pump()

    # ------------------------------------------------------------ input

    def read_buffer(self):
        """A writable memoryview to read socket bytes into; then call commit(n)."""
        return self._dec.write_buffer()

    def commit(self, n):
        self._dec.commit(n)

    def receive_data(self, data):
        self._dec.receive_data(data)

    def next_event(self, now):
        """The next packet the application cares about, or None when more bytes are needed.

        Returns Connack, Publish (a new message: deliver it; QoS 2 duplicates are answered
        here and never returned), Ack (PUBACK/PUBCOMP: an outgoing message is complete; a
        reused object), Suback or Ack(UNSUBACK). Acknowledgements go into the output.
        Raises MQTTException for a refused connection or a malformed/unexpected packet.
        """
        while True:
            try:
                p = self._dec.next_packet()
            except codec.MQTTError as e:
                raise MQTTException("malformed packet from the broker: " + e.reason)
            if p is None:
                return None
            self._rx = now
            t = p.type
            if t == codec.CONNACK:
                if self.state != CONNECTING:
                    break
                return self._connack(p)
            if self.state != CONNECTED:
                break
            if t == codec.PUBLISH:
                q = p.qos
                if q == 1:
                    self._ack(codec.PUBACK, p.pid)
                elif q == 2:
                    self._ack(codec.PUBREC, p.pid)
                    if p.pid in self._qos2_in:
                        continue
                    self._qos2_in.append(p.pid)
                return p
            if t == codec.PUBREL:
                if p.pid in self._qos2_in:
                    self._qos2_in.remove(p.pid)
                self._ack(codec.PUBCOMP, p.pid)
                continue
            if t == codec.PINGRESP:
                self._ping = False
                continue
            if t == codec.SUBACK or t == codec.UNSUBACK:
                return p
            if not codec.PUBACK <= t <= codec.PUBCOMP:
                break
            # PUBACK, PUBREC, PUBCOMP for an outgoing message
            k = self._find(p.pid)
            if k < 0:
                continue  # a late answer for a message already complete
            st = self._st[k]
            if t == codec.PUBREC:
                if st & 3 == 2:
                    self._st[k] = st | _REL
                    self._ack(codec.PUBREL, p.pid)
                continue
            if (st & 3) != (1 if t == codec.PUBACK else 2):
                continue
            self._remove(k)
            self._pump()
            return p
        raise MQTTException("unexpected packet type %d from the broker" % t)

    def _connack(self, p):
        rc = p.return_code
        if rc:
            reason = codec.CONNACK_REASONS[rc] if rc < 6 else "unknown reason"
            raise MQTTException("connection refused: %s (CONNACK %d)" % (reason, rc))
        self.state = CONNECTED
        self._tries = 0
        sp = self.session_present = p.session_present
        if not sp:
            self._qos2_in = []
        filters = [(s[0], s[1]) for s in self.subs if not (sp and s[3])]
        if filters:
            self._subscribe(filters)
            for s in self.subs:
                s[3] = True
        if sp and self._unsubs:
            self._unsubscribe(self._unsubs)
        self._unsubs = []
        for k in range(self._n):  # everything on the wire before goes again, in order
            st = self._st[k]
            if st & _SENT:
                self._st[k] = (st & ~_SENT) | _DUP
        self._pump()
        return p

    # ------------------------------------------------------------ output

    def _grow(self, n):
        """Make room for n more output bytes; return the index to write at."""
        i = self.nout
        if i + n > len(self.out):
            new = bytearray(max(2 * len(self.out), i + n))
            new[0:i] = self._omv[0:i]
            self.out = new
            self._omv = memoryview(new)
        return i

    def _append(self, data):
        i = self._grow(len(data))
        self.out[i : i + len(data)] = data
        self.nout = i + len(data)

    def _ack(self, t, pid):
        i = self._grow(4)
        b = self.out
        b[i] = (t << 4) | (2 if t == codec.PUBREL else 0)
        b[i + 1] = 2
        b[i + 2] = pid >> 8
        b[i + 3] = pid & 255
        self.nout = i + 4

    def _emit(self, st, pid, topic, payload):
        size = codec.publish_size(len(topic), len(payload), st & 3)
        i = self._grow(size)
        buf = self._omv[i:] if i else self.out  # no slice (no allocation) when empty
        self.nout = i + codec.encode_publish(
            buf, topic, payload, st & 3, st & _RETAIN, st & _DUP, pid
        )

    def _topic(self, topic):
        # The checked, encoded topic; cached for the same (immutable) object published again.
        if topic is self._ltopic:
            return self._ltb
        s = topic if isinstance(topic, str) else str(topic, "utf-8")
        topics.check_topic(s)
        tb = s.encode()
        if isinstance(topic, (str, bytes)):
            self._ltopic = topic
            self._ltb = tb
        return tb

    def publish(self, topic, payload, qos=0, retain=False):
        """Send or queue one message; return its packet id (0 for QoS 0).

        QoS 0 goes out at once when connected; otherwise the message is queued (offline
        QoS 0 messages are dropped oldest-first when the queue is full, counted in
        `dropped`). QoS 1/2 raise MQTTException when the queue is full (see room()).
        """
        tb = self._topic(topic)
        if not 0 <= qos <= 2:
            raise ValueError("QoS must be 0, 1 or 2")
        st = qos | (_RETAIN if retain else 0)
        if isinstance(payload, str):
            payload = payload.encode()
        if not qos and self.state == CONNECTED:
            self._emit(st, 0, tb, payload)
            return 0
        if not isinstance(payload, bytes):
            payload = bytes(payload)  # the queue keeps it: never a buffer the caller reuses
        size = len(tb) + len(payload)
        while self._n == len(self._st) or self._qb + size > self.queue_bytes:
            k = 0
            while k < self._n and self._st[k] & 3:
                k += 1
            if k == self._n:  # no QoS 0 message to drop
                if not qos:
                    self.dropped += 1
                    return 0
                raise MQTTException(
                    "publish queue full (%d messages, %d of %d bytes)"
                    % (self._n, self._qb, self.queue_bytes)
                )
            self._remove(k)
            self.dropped += 1
        pid = self._newpid() if qos else 0
        k = self._n
        self._st[k] = st
        self._pid[k] = pid
        self._top[k] = tb
        self._pay[k] = payload
        self._n = k + 1
        self._qb += size
        self._pump()
        return pid

    def room(self, size):
        """True when a QoS 1/2 message of `size` topic+payload bytes fits the queue now."""
        return self._n < len(self._st) and self._qb + size <= self.queue_bytes

    def pending(self, pid):
        """True while the outgoing message with this packet id is not complete."""
        return self._find(pid) >= 0

    def queued(self):
        """Messages queued or in flight."""
        return self._n

    def _pump(self):
        # Put queued messages on the wire in order, keeping at most max_inflight in flight.
        if self.state != CONNECTED:
            return
        fly = 0
        for k in range(self._n):
            if self._st[k] & _SENT:
                fly += 1
        k = 0
        while k < self._n:
            st = self._st[k]
            if not st & _SENT:
                if st & _REL:
                    self._ack(codec.PUBREL, self._pid[k])
                elif fly >= self.max_inflight or self.nout:
                    return  # window full, or one PUBLISH per write: sent() pumps again
                else:
                    self._emit(st, self._pid[k], self._top[k], self._pay[k])
                if not st & 3:
                    self._remove(k)
                    continue
                self._st[k] = st | _SENT
                fly += 1
            k += 1

    def _find(self, pid):
        for k in range(self._n):
            if self._pid[k] == pid:
                return k
        return -1

    def _remove(self, k):
        n = self._n - 1
        self._qb -= len(self._top[k]) + len(self._pay[k])
        st = self._st
        pi = self._pid
        to = self._top
        pa = self._pay
        for j in range(k, n):
            st[j] = st[j + 1]
            pi[j] = pi[j + 1]
            to[j] = to[j + 1]
            pa[j] = pa[j + 1]
        st[n] = pi[n] = 0
        to[n] = pa[n] = None
        self._n = n

    def _newpid(self):
        while True:
            p = self._lastpid % 65535 + 1
            self._lastpid = p
            if self._find(p) < 0:
                return p

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, filt, qos=0, handler=None):
        """Remember a subscription (it survives reconnects); when connected, SUBSCRIBE goes
        into the output and its packet id is returned (else 0)."""
        topics.check_filter(filt)
        if not 0 <= qos <= 2:
            raise ValueError("QoS must be 0, 1 or 2")
        self.forget(filt)
        if handler is not None:
            self._handlers += 1
        on = self.state == CONNECTED
        self.subs.append([filt, qos, handler, on])
        return self._subscribe([(filt, qos)]) if on else 0

    def unsubscribe(self, filt):
        """Forget a subscription; UNSUBSCRIBE goes out now or after the next reconnect."""
        self.forget(filt)
        if self.state == CONNECTED:
            return self._unsubscribe([filt])
        self._unsubs.append(filt)
        return 0

    def forget(self, filt):
        """Drop a subscription record without telling the broker."""
        for s in self.subs:
            if s[0] == filt:
                self.subs.remove(s)
                if s[2] is not None:
                    self._handlers -= 1
                return

    def _subscribe(self, filters):
        pid = self._newpid()
        self._append(codec.encode(codec.Subscribe(pid, filters)))
        return pid

    def _unsubscribe(self, filters):
        pid = self._newpid()
        self._append(codec.encode(codec.Unsubscribe(pid, filters)))
        return pid

    def dispatch(self, msg):
        """Hand a message to the handlers of every matching filter, else to `callback`
        as fn(topic, payload, msg)."""
        topic = msg.topic
        if self._handlers:
            hit = False
            for s in self.subs:
                if s[2] is not None and topics.matches(s[0], topic):
                    s[2](topic, msg.payload, msg)
                    hit = True
            if hit:
                return
        if self.callback is not None:
            self.callback(topic, msg.payload, msg)

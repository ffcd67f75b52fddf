# The MQTT 3.1.1 client session without I/O (the h11 model), and everything the blocking
# (client.py) and asyncio (aclient.py) drivers share: bytes in through receive_data() (or
# straight into the decoder, `_dec`), packets out of next_event() (or handle(), which
# dispatches them), bytes to send in `out[:nout]` (then sent(now)), time passed in as
# ticks_ms integers.
#
# Output coalesces: packets are appended to `out` and a driver writes them in one go per
# loop step. When the next packet does not fit, _out() is called first: a driver writes
# out[:nout] there; the bare session keeps the bytes and grows the buffer.
#
# Outgoing QoS 1/2 messages (and messages published while offline) wait in one bounded
# queue kept in publish order in four preallocated parallel lists, `_q`: states, packet
# ids, encoded topics, payloads. The first `_sent` of them are on the wire (at most
# max_inflight). Entries hold the caller's immutable topic/payload (a bytearray payload is
# copied), so publishing allocates nothing on MicroPython.
#
# Small on purpose (a board loads it into its heap): private names are short, small steps
# are not methods of their own, and state that rarely changes lives in the class.
import random

from midge import codec, topics
from midge.compat import const, ticks_add, ticks_diff

# packet types (codec's numbers, folded into the bytecode here)
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBREC = const(5)
_PUBREL = const(6)
_SUBACK = const(9)
_UNSUBACK = const(11)
_PINGRESP = const(13)

# the packet types a broker may send once connected, as bits
_EXPECTED = const(0x2AF8)  # PUBLISH..PUBCOMP (3..7), SUBACK 9, UNSUBACK 11, PINGRESP 13

# queue entry state: PUBLISH header flags (retain 1, QoS << 1, DUP 8), plus
_REL = const(16)  # PUBREC received, PUBREL due/sent


class MQTTException(OSError):
    """Everything that goes wrong in the client, with a message saying what happened.

    An OSError, so code written for umqtt (`except OSError:`) keeps working.
    """


def _str(s, filt=False):
    # A topic (or filter) as a checked str (bytes are taken as UTF-8).
    s = s if isinstance(s, str) else str(s, "utf-8")
    (topics.check_filter if filt else topics.check_topic)(s)
    return s


class Session:
    """One client's MQTT state across connections: queue, in-flight window, QoS 2 ids,
    subscriptions, keepalive and reconnect timing; where to connect, for the drivers
    (port 0: 1883, or 8883 with ssl)."""

    # State that is often left as it is lives in the class until an instance changes it
    # (the instance dict stays smaller); what every connection sets is in __init__.
    will = callback = last_error = ssl = ssl_params = None  # last_error: why the link broke
    dropped = reconnects = 0  # dropped: QoS 0 messages dropped from a full offline queue
    # _n: messages queued, _qb: their bytes, _pid: the last packet id given, _at: when to
    # reconnect
    _n = _qb = _pid = _at = 0
    _ack = _lt = None  # the last SUBACK/UNSUBACK; the last topic published,
    _ltb = b""  # and its checked encoding
    _unsubs = ()  # filters unsubscribed offline or not acknowledged yet
    _acks = ()  # ids of this link's SUBSCRIBE/UNSUBSCRIBE waiting for their ack
    proto = 4  # the CONNECT's protocol level (a Mosquitto-style bridge sets 0x84)

    def __init__(
        self,
        client_id,
        server="127.0.0.1",
        port=0,
        user=None,
        password=None,
        keepalive=60,
        clean_session=True,
        ssl=None,
        ssl_params=None,
        reconnect=True,
        max_inflight=8,
        queue_count=16,
        queue_bytes=8192,
        bufsize=256,
        backoff_min=500,
        backoff_max=30000,
    ):
        # connected: CONNACK came and the link is up; _up: between a driver's connect()
        # and disconnect(); _wait: what the link waits for: _CONNACK (CONNECT sent),
        # _PINGRESP (PINGREQ sent) or nothing (0); _rx/_tx: when a packet last came/went;
        # _try: failed connects in a row; _sent: queued messages on the wire
        self.connected = self.session_present = self._up = False
        self.nout = self._wait = self._rx = self._tx = self._try = self._sent = 0
        self.connect_timeout = 5000
        self.client_id = client_id
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.clean_session = clean_session
        if ssl:
            self.ssl = ssl
            self.ssl_params = ssl_params
        self.reconnect = reconnect
        self.max_inflight = max_inflight
        self.queue_bytes = queue_bytes
        self.bufsize = bufsize
        self._bo = (backoff_min, backoff_max)
        self.out = bytearray(bufsize)
        self.subs = []  # [filter, qos, handler, sent] in subscription order
        self._in2 = []  # packet ids of QoS 2 messages delivered, waiting for PUBREL
        # the queue: states, packet ids, encoded topics, payloads (None past the end)
        e = [None] * queue_count  # type: list
        self._q = (e, e[:], e[:], e[:])

    def set_will(self, topic, payload, qos=0, retain=False):
        self.will = (_str(topic), payload, qos, retain)

    def set_callback(self, fn):
        """fn(topic, payload, msg) for messages no per-filter handler took."""
        self.callback = fn

    # ------------------------------------------------------------ connection

    def begin(self, now):
        """Start a connection (the transport is open): CONNECT goes into the output."""
        self._dec = codec.Decoder(0, True, self.bufsize, True)
        self.nout = 0
        self.connected = False
        self._wait = _CONNACK
        self._rx = self._tx = now  # _rx: when CONNECT went, until CONNACK
        w = self.will or (None, None, 0, False)
        self._add(
            codec.encode(
                codec.Connect(
                    self.client_id,
                    self.clean_session,
                    self.keepalive,
                    self.user,
                    self.password,
                    *w,
                    self.proto,
                )
            )
        )

    def end(self):
        """A clean goodbye: DISCONNECT goes into the output after what is there (a QoS 0
        message put but not yet written still goes); no reconnect after it."""
        c = self.connected
        n = self.nout
        self.lost(0)
        self._at = None
        if c:
            self.nout = n
            self._add(b"\xe0\x00")  # DISCONNECT

    def lost(self, now):
        """The transport broke: forget the connection, plan the next attempt (backoff with
        jitter); the queue, in-flight messages and subscriptions stay."""
        self.connected = False
        self.nout = self._sent = self._wait = 0
        if self._acks:  # a (UN)SUBSCRIBE may not have reached the broker: all go again
            for s in self.subs:
                s[3] = False
            self._acks = ()
        lo, hi = self._bo
        d = min(hi, lo << min(self._try, 16)) // 2
        self._try += 1
        self._at = ticks_add(now, d + random.getrandbits(16) * d // 65535)

    def tick(self, now):
        """Run the timers: PINGREQ when idle, MQTTException when CONNACK or the broker is
        overdue. Returns ms until the next timer is due (-1: none); disconnected, ms until
        the next reconnect attempt is due (0: now; -1: none planned)."""
        rx = ticks_diff(now, self._rx)
        if self._wait == _CONNACK:
            t = self.connect_timeout
            if rx >= t:
                raise MQTTException("timed out waiting for CONNACK after %d s" % (t // 1000))
            return t - rx
        if not self.connected:
            return -1 if self._at is None else max(0, ticks_diff(self._at, now))
        ka = self.keepalive * 1000
        if not ka:
            return -1
        dead = ka * 3 // 2 - rx
        if dead <= 0:
            raise MQTTException(
                "no answer from the broker for %d s (keepalive %d s)" % (rx // 1000, ka // 1000)
            )
        if not self._wait:  # no PINGREQ unanswered
            t = ka - max(rx, ticks_diff(now, self._tx))
            if t > 0:
                return min(t, dead)
            self.ping()
        return dead

    def ping(self):
        self._add(b"\xc0\x00")  # PINGREQ
        self._wait = _PINGRESP

    def sent(self, now):
        """out[:nout] was written."""
        self.nout = 0
        self._tx = now

    def _out(self):
        """The driver's hook: write out[:nout] now, then call sent()."""

    # ------------------------------------------------------------ input

    def receive_data(self, data):
        self._dec.receive_data(data)

    def next_event(self, now):
        """The next packet the application cares about, or None when more bytes are needed.

        Returns Connack, Publish (a new message: deliver it; QoS 2 duplicates are answered
        here and never returned), Ack (PUBACK/PUBCOMP: an outgoing message is complete),
        Suback or Ack(UNSUBACK); Publish and Ack are reused objects, valid until the next
        call. Acknowledgements go into the output. Raises MQTTException for a refused
        connection or a malformed/unexpected packet.
        """
        while True:
            try:
                p = self._dec.next_packet()
            except codec.MQTTError as e:
                raise MQTTException("malformed packet from the broker: " + e.reason)
            if p is None:
                return
            self._rx = now
            t = p.type
            if t == _CONNACK and self._wait == t:
                rc = p.return_code
                if rc:  # 1..5 (MQTT 3.1.1 table 3.1; the codec refuses others)
                    why = (
                        "unacceptable protocol version,identifier rejected,server unavailable,"
                        "bad username or password,not authorized"
                    ).split(",")[rc - 1]
                    raise MQTTException("connection refused: %s (CONNACK %d)" % (why, rc))
                self.connected = True
                self._try = self._sent = self._wait = 0  # everything on the wire before goes again
                sp = self.session_present = p.session_present
                if not sp:
                    self._in2 = []
                # UNSUBSCRIBE first: a filter subscribed again since goes below. The list
                # stays until every SUBSCRIBE/UNSUBSCRIBE is acknowledged (see lost())
                if self._unsubs:
                    if sp:
                        self._req(self._unsubs)
                    else:
                        self._unsubs = ()
                filters = []  # (a comprehension would make sp a cell: 32 B per call)
                for s in self.subs:
                    if not (sp and s[3]):
                        filters.append((s[0], s[1]))
                    s[3] = True
                if filters:
                    self._req(filters, True)
                self._pump()
                return p
            if not (self.connected and _EXPECTED >> t & 1):
                raise MQTTException("unexpected packet type %d from the broker" % t)
            if t == _PINGRESP:
                self._wait = 0
                continue
            pid = p.pid
            if t == _PUBLISH:
                q = p.qos
                if q:
                    self._ack4(0x30 + 16 * q, pid)  # PUBACK or PUBREC
                if q == 2:
                    if pid in self._in2:
                        continue
                    self._in2.append(pid)
                return p
            if t == _PUBREL:
                if pid in self._in2:
                    self._in2.remove(pid)
                self._ack4(0x70, pid)  # PUBCOMP
                continue
            if t == _SUBACK or t == _UNSUBACK:
                a = self._acks
                if pid in a:
                    i = a.index(pid)
                    a = self._acks = a[:i] + a[i + 1 :]
                    if not a:
                        self._unsubs = ()
                self._ack = p
                return p
            # PUBACK, PUBREC or PUBCOMP: taken when a message in flight waits for it (QoS 1:
            # PUBACK; QoS 2: PUBREC, then with _REL set PUBCOMP), else a late answer
            sts, pids = self._q[0], self._q[1]
            k = pids.index(pid) if pid in pids else self._sent  # (index() raising allocates)
            if k < self._sent and sts[k] & 22 == b"\x02\x04\x00\x14"[t - 4]:
                if t == _PUBREC:
                    sts[k] |= _REL
                    self._ack4(0x62, pid)  # PUBREL
                else:
                    self._rm(k)
                    self._pump()
                    return p

    def handle(self, now):
        """Take every whole packet received: messages go to the handlers of every matching
        filter, else to `callback` as fn(topic, payload, msg). Returns how many came."""
        n = 0
        while True:
            p = self.next_event(now)
            if p is None:
                return n
            if p.type == _PUBLISH:
                n += 1
                cb = self.callback
                # p is the decoder's reused object: a handler that runs the loop again (a
                # waiting publish) refills it, so every handler gets this message's fields.
                topic = p.topic
                payload = p.payload
                for s in self.subs:
                    if s[2] and topics.matches(s[0], topic):
                        s[2](topic, payload, p)
                        cb = None
                if cb:
                    cb(topic, payload, p)
                if not self.connected:  # a handler called end(): the rest is not wanted
                    return n

    def _left(self, pid, timeout, spent, filt=None):
        # A driver's wait for packet id pid after `spent` of `timeout` ms: minus the ms left
        # while it is pending (MQTTException when the time is up). Once it is over: for a
        # SUBSCRIBE (filt) the granted QoS (a refusal forgets the filter and raises), None
        # when no SUBACK came (the link broke: it goes again) or for other packets.
        if self.pending(pid):
            if spent >= timeout:
                raise MQTTException("no acknowledgement of packet %d after %d ms" % (pid, timeout))
            return spent - timeout
        a = self._ack
        if filt and a and a.pid == pid:
            if a.codes[0] > 2:
                self.forget(filt)
                raise MQTTException("subscription to %r refused by the broker" % filt)
            return a.codes[0]

    # ------------------------------------------------------------ output

    def _add(self, data, n=0):
        # Append data to the output, or with n, make room for n more bytes; return the
        # index it goes at.
        i = self.nout
        if data:
            n = len(data)
        if i + n > len(self.out):
            if i:
                self._out()
                i = self.nout
            if i + n > len(self.out):
                new = bytearray(i + n + self.bufsize)
                new[0:i] = memoryview(self.out)[0:i]
                self.out = new
        if data:
            self.nout = i + n
            self.out[i : i + n] = data
        return i

    def _ack4(self, b0, pid):
        # A 4-byte PUBACK/PUBREC/PUBREL/PUBCOMP with first byte b0.
        i = self._add(None, 4)
        b = self.out
        b[i] = b0
        b[i + 1] = 2
        b[i + 2] = pid >> 8
        b[i + 3] = pid & 255
        self.nout = i + 4

    def put(self, topic, payload, qos=0, retain=False):
        """Send or queue one message; return its packet id (0 for QoS 0).

        QoS 0 goes into the output at once when connected; otherwise the message is queued
        (offline QoS 0 messages are dropped oldest-first when the queue is full, counted in
        `dropped`). When the queue is full, a QoS 1/2 message raises MQTTException while
        offline; connected, put returns -1: wait until the oldest message is acknowledged
        (packet id _q[1][0]) and put it again.
        """
        if topic != self._lt:
            s = _str(topic)
            self._ltb = s.encode()
            self._lt = topic if isinstance(topic, (str, bytes)) else s
        tb = self._ltb
        if isinstance(payload, str):
            payload = payload.encode()
        st = 1 if retain else 0
        if qos or not self.connected:
            if not 0 <= qos <= 2:
                raise ValueError("QoS must be 0, 1 or 2")
            if not isinstance(payload, bytes):
                payload = bytes(payload)  # the queue keeps it: never a buffer the caller reuses
            size = len(tb) + len(payload)
            sts, pids, tbs, pls = self._q
            while self._n >= len(sts) or self._qb + size > self.queue_bytes:
                if 0 not in pids:  # no QoS 0 message (queued offline) to drop
                    if not qos:
                        self.dropped += 1
                        return 0
                    if self._n and self.connected:
                        return -1
                    raise MQTTException(
                        "publish queue full (%d messages, %d of %d bytes)"
                        % (self._n, self._qb, self.queue_bytes)
                    )
                self._rm(pids.index(0))  # the oldest goes first
                self.dropped += 1
            pid = self._newpid() if qos else 0
            n = self._n
            sts[n] = st | qos << 1
            pids[n] = pid
            tbs[n] = tb
            pls[n] = payload
            self._n += 1
            self._qb += size
            self._pump()
            return pid
        i = self._add(None, len(tb) + len(payload) + 9)
        self.nout = codec.encode_publish(self.out, tb, payload, 0, retain, False, 0, i)
        return 0

    def pending(self, pid):
        """True while the message, SUBSCRIBE or UNSUBSCRIBE with this packet id waits for
        its acknowledgement."""
        return pid in self._q[1] or pid in self._acks

    def queued(self):
        """Messages queued or in flight."""
        return self._n

    def _pump(self):
        # Put queued messages on the wire in order, keeping at most max_inflight in flight.
        sts, pids, tbs, pls = self._q
        k = self._sent
        while k < self._n and k < self.max_inflight and self.connected:
            st = sts[k]
            if st & _REL:
                self._ack4(0x62, pids[k])
            else:
                tb = tbs[k]
                pl = pls[k]
                i = self._add(None, len(tb) + len(pl) + 9)
                self.nout = codec.encode_publish(
                    self.out, tb, pl, st >> 1 & 3, st & 1, st & 8, pids[k], i
                )
            if st & 6:
                sts[k] = st | 8  # DUP if it ever goes again
                k += 1
            else:
                self._rm(k)  # a QoS 0 message queued offline: gone once written
        self._sent = k

    def _rm(self, k):
        # Take entry k out of the queue (the lists keep their length and storage).
        q = self._q
        self._qb -= len(q[2][k]) + len(q[3][k])
        self._n -= 1
        for col in q:
            col.pop(k)
            col.append(None)
        if k < self._sent:
            self._sent -= 1

    def _newpid(self):
        # A packet id no message in the queue and no SUBSCRIBE/UNSUBSCRIBE waiting for its
        # ack holds (MQTT-2.3.1-2).
        while True:
            p = self._pid = self._pid % 65535 + 1
            if not self.pending(p):
                return p

    # ------------------------------------------------------------ subscriptions

    def _req(self, items, sub=False):
        # SUBSCRIBE (items: (filter, qos) pairs) or UNSUBSCRIBE (filters) into the output,
        # its id reserved until the ack.
        pid = self._newpid()
        self._acks += (pid,)
        self._add(codec.encode((codec.Subscribe if sub else codec.Unsubscribe)(pid, items)))
        return pid

    def sub(self, filt, qos=0, handler=None):
        """Remember a subscription (it survives reconnects); when connected, SUBSCRIBE goes
        into the output and its packet id is returned (else 0)."""
        filt = _str(filt, True)
        if not 0 <= qos <= 2:
            raise ValueError("QoS must be 0, 1 or 2")
        self.forget(filt)
        on = self.connected
        self.subs.append([filt, qos, handler, on])
        return on and self._req([(filt, qos)], True)

    def unsub(self, filt):
        """Forget a subscription; UNSUBSCRIBE goes out now or after the next reconnect."""
        self.forget(filt)
        self._unsubs += (filt,)  # until acknowledged: a lost link sends it again
        return self.connected and self._req([filt])

    def forget(self, filt):
        """Drop a subscription record without telling the broker."""
        for s in self.subs:
            if s[0] == filt:
                self.subs.remove(s)
                return

# MQTT 3.1.1 packet codec shared by the client and the broker (sans-I/O: bytes only).
#
# Encoding writes into a caller-owned bytearray (encode_publish allocates nothing on
# MicroPython when topic and payload are bytes-like). Decoding is incremental: feed any
# chunking of a stream to Decoder and take whole packets out with next_packet().
# Every malformed input raises MQTTError; nothing else escapes from decoding.
from midge.compat import const

CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

# Largest remaining length the 4-byte varint can carry, and so the largest packet.
MAX_REMAINING = const(268435455)
MAX_PACKET = const(268435460)

# CONNACK return codes (MQTT 3.1.1 table 3.1)
ACCEPTED = const(0)
REFUSED_PROTOCOL = const(1)
REFUSED_IDENTIFIER = const(2)
REFUSED_UNAVAILABLE = const(3)
REFUSED_CREDENTIALS = const(4)
REFUSED_NOT_AUTHORIZED = const(5)
CONNACK_REASONS = (
    "accepted",
    "unacceptable protocol version",
    "identifier rejected",
    "server unavailable",
    "bad username or password",
    "not authorized",
)

PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"
DISCONNECT_BYTES = b"\xe0\x00"


class MQTTError(Exception):
    """Malformed input or a protocol violation.

    reason: what was wrong, for logs and error messages.
    code: for a CONNECT that can be answered, the CONNACK return code to send before
    closing; None means close the connection without an answer.
    """

    def __init__(self, reason, code=None):
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Packet:
    type = 0

    def __eq__(self, other):
        if not isinstance(other, Packet) or self.type != other.type:
            return False
        a, b = self.__dict__, other.__dict__
        if len(a) != len(b):
            return False
        for k in a:
            x, y = a[k], b.get(k)
            if isinstance(x, memoryview):
                x = bytes(x)
            if isinstance(y, memoryview):
                y = bytes(y)
            if x != y:
                return False
        return True

    def __repr__(self):
        return "%s%r" % (type(self).__name__, self.__dict__)


class Connect(Packet):
    type = CONNECT

    def __init__(
        self,
        client_id="",
        clean_session=True,
        keepalive=0,
        username=None,
        password=None,
        will_topic=None,
        will_payload=None,
        will_qos=0,
        will_retain=False,
        proto_level=4,
    ):
        self.client_id = client_id
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.username = username
        self.password = password
        self.will_topic = will_topic
        self.will_payload = will_payload
        self.will_qos = will_qos
        self.will_retain = will_retain
        self.proto_level = proto_level


class Connack(Packet):
    type = CONNACK

    def __init__(self, session_present=False, return_code=0):
        self.session_present = session_present
        self.return_code = return_code


class Publish(Packet):
    type = PUBLISH

    def __init__(self, topic, payload=b"", qos=0, retain=False, dup=False, pid=0):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.pid = pid


class Ack(Packet):
    """PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK (a packet identifier and nothing else), or
    with pid 0, PINGREQ, PINGRESP, DISCONNECT (a fixed header and nothing else)."""

    def __init__(self, type, pid=0):
        self.type = type
        self.pid = pid


class Subscribe(Packet):
    type = SUBSCRIBE

    def __init__(self, pid, topics):
        self.pid = pid
        self.topics = topics  # list of (filter, qos)


class Suback(Packet):
    type = SUBACK

    def __init__(self, pid, codes):
        self.pid = pid
        self.codes = codes  # list of 0, 1, 2 or 0x80


class Unsubscribe(Packet):
    type = UNSUBSCRIBE

    def __init__(self, pid, filters):
        self.pid = pid
        self.filters = filters


Simple = Ack
PINGREQ_PKT = Simple(PINGREQ)
PINGRESP_PKT = Simple(PINGRESP)
DISCONNECT_PKT = Simple(DISCONNECT)
_SIMPLE = (None,) * 12 + (PINGREQ_PKT, PINGRESP_PKT, DISCONNECT_PKT)


# ---------------------------------------------------------------- topic rules (section 4.7)


def check_topic(name):
    """Raise MQTTError unless name is a valid topic name for PUBLISH."""
    if not name:
        raise MQTTError("empty topic name")
    if "+" in name or "#" in name:
        raise MQTTError("wildcard in topic name %r" % name)
    if "\x00" in name:
        raise MQTTError("U+0000 in topic name")


def check_filter(filt):
    """Raise MQTTError unless filt is a valid topic filter for SUBSCRIBE/UNSUBSCRIBE."""
    if not filt:
        raise MQTTError("empty topic filter")
    if "\x00" in filt:
        raise MQTTError("U+0000 in topic filter")
    if "+" not in filt and "#" not in filt:
        return
    levels = filt.split("/")
    last = len(levels) - 1
    for i, lv in enumerate(levels):
        if ("#" in lv and (lv != "#" or i != last)) or ("+" in lv and lv != "+"):
            raise MQTTError("bad wildcard in topic filter %r" % filt)


# ---------------------------------------------------------------- encoding


def _b(s):
    return s.encode() if isinstance(s, str) else s


def _rl_size(n):
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2097152:
        return 3
    if n <= MAX_REMAINING:
        return 4
    raise ValueError("remaining length %d exceeds %d" % (n, MAX_REMAINING))


def _header(buf, b0, rl):
    """Write the fixed header; return the index where the variable header starts."""
    need = 1 + _rl_size(rl) + rl
    if need > len(buf):
        raise ValueError("packet of %d bytes does not fit a %d-byte buffer" % (need, len(buf)))
    buf[0] = b0
    i = 1
    while True:
        d = rl & 0x7F
        rl >>= 7
        if rl:
            buf[i] = d | 0x80
            i += 1
        else:
            buf[i] = d
            return i + 1


def _u16(buf, i, v):
    buf[i] = v >> 8
    buf[i + 1] = v & 0xFF
    return i + 2


def _bin(buf, i, data):
    n = len(data)
    if n > 65535:
        raise ValueError("string of %d bytes exceeds 65535" % n)
    buf[i] = n >> 8
    buf[i + 1] = n & 0xFF
    i += 2
    buf[i : i + n] = data
    return i + n


def _check_pid(pid):
    if not 0 < pid < 65536:
        raise ValueError("packet identifier %r not in 1..65535" % (pid,))


def publish_size(topic_len, payload_len, qos=0):
    """Bytes of a whole PUBLISH packet with a topic and payload of these byte lengths."""
    rl = 2 + topic_len + payload_len + (2 if qos else 0)
    return 1 + _rl_size(rl) + rl


def encode_publish(buf, topic, payload, qos=0, retain=False, dup=False, pid=0):
    """Write a PUBLISH into buf; return its length. No allocation for bytes-like arguments."""
    if isinstance(topic, str):
        topic = topic.encode()
    if isinstance(payload, str):
        payload = payload.encode()
    tl = len(topic)
    pl = len(payload)
    rl = 2 + tl + pl
    b0 = 0x30
    if qos:
        if qos > 2 or qos < 0:
            raise ValueError("QoS must be 0, 1 or 2")
        _check_pid(pid)
        rl += 2
        b0 |= qos << 1
        if dup:
            b0 |= 8
    if retain:
        b0 |= 1
    i = _bin(buf, _header(buf, b0, rl), topic)
    if qos:
        i = _u16(buf, i, pid)
    buf[i : i + pl] = payload
    return i + pl


def encode_ack(buf, type, pid):
    """PUBACK, PUBREC, PUBREL (flags 0b0010 added), PUBCOMP or UNSUBACK."""
    _check_pid(pid)
    buf[0] = (type << 4) | (2 if type == PUBREL else 0)
    buf[1] = 2
    buf[2] = pid >> 8
    buf[3] = pid & 0xFF
    return 4


def encode_connack(buf, session_present, return_code):
    buf[0] = 0x20
    buf[1] = 2
    buf[2] = 1 if session_present else 0
    buf[3] = return_code
    return 4


def _fld(s):
    """A length-prefixed field, as new bytes (for packets off the hot path)."""
    s = _b(s)
    n = len(s)
    if n > 65535:
        raise ValueError("field of %d bytes exceeds 65535" % n)
    return bytes((n >> 8, n & 255)) + s


def _parts(p):
    """(first byte, body parts) for CONNECT, SUBSCRIBE, SUBACK, UNSUBSCRIBE and pings."""
    t = p.type
    if t == CONNECT:
        flags = 2 if p.clean_session else 0
        ka = p.keepalive
        parts = [_fld(b"MQIsdp" if p.proto_level == 3 else b"MQTT"), b"", _fld(p.client_id)]
        if p.will_topic is not None:
            flags |= 4 | p.will_qos << 3 | (32 if p.will_retain else 0)
            parts += [_fld(p.will_topic), _fld(p.will_payload or b"")]
        if p.username is not None:
            flags |= 128
            parts.append(_fld(p.username))
        if p.password is not None:
            if p.username is None:
                raise ValueError("password without username")
            flags |= 64
            parts.append(_fld(p.password))
        parts[1] = bytes((p.proto_level, flags, ka >> 8, ka & 255))
        return 0x10, parts
    if t >= PINGREQ:
        return t << 4, ()
    _check_pid(p.pid)
    parts = [bytes((p.pid >> 8, p.pid & 255))]
    if t == SUBACK:
        parts.append(bytes(p.codes))
    elif t == SUBSCRIBE:
        for f, q in p.topics:
            parts += [_fld(f), bytes((q,))]
    else:
        parts += [_fld(f) for f in p.filters]
    return (t << 4) | (0 if t == SUBACK else 2), parts


def encode_into(buf, p):
    """Write any packet object into buf; return its length."""
    t = p.type
    if t == PUBLISH:
        return encode_publish(buf, p.topic, p.payload, p.qos, p.retain, p.dup, p.pid)
    if t == CONNACK:
        return encode_connack(buf, p.session_present, p.return_code)
    if PUBACK <= t <= PUBCOMP or t == UNSUBACK:
        return encode_ack(buf, t, p.pid)
    b0, parts = _parts(p)
    i = _header(buf, b0, sum(len(x) for x in parts))
    for x in parts:
        buf[i : i + len(x)] = x
        i += len(x)
    return i


def encode(p):
    """Encode any packet object into new bytes (allocates; for non-hot paths)."""
    t = p.type
    if t == PUBLISH:
        n = publish_size(len(_b(p.topic)), len(_b(p.payload)), p.qos)
    elif CONNACK <= t <= PUBCOMP or t == UNSUBACK:
        n = 4
    else:
        n = 5 + sum(len(x) for x in _parts(p)[1])
    buf = bytearray(n)
    return bytes(buf[: encode_into(buf, p)])


# ---------------------------------------------------------------- decoding


def _utf8_ok(s, nbytes):
    """True when str s, decoded from nbytes of UTF-8, breaks no rule of section 1.5.3:
    no U+0000, no surrogates, nothing above U+10FFFF, no overlong forms (which would make
    the shortest encoding of s shorter than nbytes)."""
    n = 0
    for c in s:
        o = ord(c)
        if o == 0 or 0xD7FF < o < 0xE000 or o > 0x10FFFF:
            return False
        n += 1 if o < 0x80 else 2 if o < 0x800 else 3 if o < 0x10000 else 4
    return n == nbytes


class Decoder:
    """Incremental MQTT packet decoder.

    receive_data(bytes) or write_buffer()/commit(n) put bytes in; next_packet() returns the
    next whole packet object or None. max_packet bounds a whole packet (fixed header
    included); it is checked as soon as the fixed header is in, before the body is buffered.
    With copy=False a PUBLISH payload is a memoryview into the decoder's buffer, valid until
    the next call into the decoder. After an MQTTError the decoder stays failed.
    """

    def __init__(self, max_packet=MAX_PACKET, copy=True, bufsize=256):
        self.max_packet = max_packet
        self.copy = copy
        self._buf = bytearray(bufsize)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._need = 0  # whole size of the packet at _start once its header is known
        self.error = None

    def pending(self):
        """Bytes received but not yet returned as packets."""
        return self._end - self._start

    def _reserve(self, n):
        """Make room for n more bytes after _end."""
        size = len(self._buf)
        if self._end + n <= size:
            return
        used = self._end - self._start
        if used + n <= size and self._start:
            if used:
                self._buf[0:used] = bytes(self._mv[self._start : self._end])
            self._start = 0
            self._end = used
            return
        new = bytearray(max(size * 2, used + n))
        new[0:used] = self._mv[self._start : self._end]
        self._buf = new
        self._mv = memoryview(new)
        self._start = 0
        self._end = used

    def receive_data(self, data):
        n = len(data)
        if n:
            self._reserve(n)
            self._buf[self._end : self._end + n] = data
            self._end += n

    def write_buffer(self, want=256):
        """A writable memoryview of free space (at least `want` bytes, more if the packet
        being received needs it); fill it, then call commit(n)."""
        if self._start == self._end:
            self._start = self._end = 0
        need = self._need - (self._end - self._start)
        self._reserve(need if need > want else want)
        return self._mv[self._end :]

    def commit(self, n):
        self._end += n

    def next_packet(self):
        if self.error is not None:
            raise self.error
        s = self._start
        avail = self._end - s
        if avail < 2:
            return None
        b = self._buf
        need = self._need
        if not need:
            rl = shift = 0
            i = s + 1
            while True:
                if i >= self._end:
                    return None
                d = b[i]
                rl |= (d & 0x7F) << shift
                i += 1
                if d < 0x80:
                    break
                shift += 7
                if shift > 21:
                    self._bad("remaining length over 4 bytes")
            need = i - s + rl
            if need > self.max_packet:
                self._bad("packet of %d bytes over the maximum %d" % (need, self.max_packet))
            self._need = need
        if avail < need:
            return None
        hl = 2
        while b[s + hl - 1] & 0x80:
            hl += 1
        try:
            pkt = self._decode(b[s], s + hl, s + need)
        except MQTTError as e:
            self.error = e
            raise
        self._need = 0
        s += need
        if s == self._end:
            s = self._end = 0
        self._start = s
        return pkt

    def _bad(self, reason):
        self.error = MQTTError(reason)
        raise self.error

    # Bodies: i..end index self._buf. Field readers return (value, next index).

    def _field(self, i, end):
        """The end of a field of a two-byte length and that many bytes starting at i."""
        j = i + 2
        if j <= end:
            j += (self._buf[i] << 8) | self._buf[i + 1]
        if j > end:
            raise MQTTError("field runs past the packet")
        return j

    def _str(self, i, end):
        j = self._field(i, end)
        i += 2
        try:
            s = str(self._mv[i:j], "utf-8")
        except (UnicodeError, ValueError):
            raise MQTTError("ill-formed UTF-8")
        # One char per byte means ASCII: only U+0000 to rule out; otherwise the full rules.
        if ("\x00" in s) if len(s) == j - i else not _utf8_ok(s, j - i):
            raise MQTTError("ill-formed UTF-8 or U+0000")
        return s, j

    def _bytes(self, i, end):
        j = self._field(i, end)
        return bytes(self._mv[i + 2 : j]), j

    def _pid(self, i, end):
        if i + 2 > end:
            raise MQTTError("no packet identifier")
        pid = (self._buf[i] << 8) | self._buf[i + 1]
        if not pid:
            raise MQTTError("packet identifier 0")
        return pid

    def _decode(self, b0, i, end):
        t = b0 >> 4
        flags = b0 & 15
        rl = end - i
        b = self._buf
        if t == PUBLISH:
            qos = (flags >> 1) & 3
            if qos == 3 or (flags & 8 and not qos):
                raise MQTTError("PUBLISH flags 0x%x" % flags)
            topic, i = self._str(i, end)
            check_topic(topic)
            pid = 0
            if qos:
                pid = self._pid(i, end)
                i += 2
            payload = self._mv[i:end]
            if self.copy:
                payload = bytes(payload)
            return Publish(topic, payload, qos, bool(flags & 1), bool(flags & 8), pid)
        if t == 0 or t == 15 or flags != (2 if t in (PUBREL, SUBSCRIBE, UNSUBSCRIBE) else 0):
            raise MQTTError("packet type %d with flags 0x%x" % (t, flags))
        if t == CONNECT:
            return self._connect(i, end)
        if t >= PINGREQ:
            if rl:
                raise MQTTError("packet type %d with a body" % t)
            return _SIMPLE[t]
        if t <= PUBCOMP or t == UNSUBACK:  # CONNACK and the acks
            if rl != 2:
                raise MQTTError("packet type %d of length %d, not 2" % (t, rl))
            if t != CONNACK:
                return Ack(t, self._pid(i, end))
            sp, rc = b[i], b[i + 1]
            if sp > 1 or rc > 5 or (sp and rc):
                raise MQTTError("CONNACK flags %d code %d" % (sp, rc))
            return Connack(sp == 1, rc)
        pid = self._pid(i, end)
        i += 2
        if t == SUBACK:
            items = list(self._mv[i:end])
            for c in items:
                if c > 2 and c != 0x80:
                    raise MQTTError("SUBACK code 0x%x" % c)
        else:
            items = []
            while i < end:
                f, i = self._str(i, end)
                check_filter(f)
                if t == SUBSCRIBE:
                    if i >= end or b[i] > 2:
                        raise MQTTError("bad requested QoS")
                    f = (f, b[i])
                    i += 1
                items.append(f)
        if not items:
            raise MQTTError("packet type %d with no topics" % t)
        return (Suback if t == SUBACK else Subscribe if t == SUBSCRIBE else Unsubscribe)(pid, items)

    def _connect(self, i, end):
        b = self._buf
        name, i = self._str(i, end)
        if i + 4 > end:
            raise MQTTError("CONNECT too short")
        level, flags = b[i], b[i + 1]
        keepalive = (b[i + 2] << 8) | b[i + 3]
        i += 4
        if name != ("MQIsdp" if level == 3 else "MQTT"):
            if name not in ("MQTT", "MQIsdp"):
                raise MQTTError("protocol name %r" % name)
            raise MQTTError("protocol level %d" % level, REFUSED_PROTOCOL)
        will = flags & 4
        wqos = (flags >> 3) & 3
        # reserved bit; will QoS/retain without will; will QoS 3; password without username
        if flags & 1 or (not will and flags & 0x38) or wqos == 3 or flags & 0xC0 == 0x40:
            raise MQTTError("CONNECT flags 0x%x" % flags)
        cid, i = self._str(i, end)
        wt = wp = user = pw = None
        if will:
            wt, i = self._str(i, end)
            check_topic(wt)
            wp, i = self._bytes(i, end)
        if flags & 128:
            user, i = self._str(i, end)
        if flags & 64:
            pw, i = self._bytes(i, end)
        if i != end:
            raise MQTTError("bytes after the CONNECT payload")
        return Connect(
            cid, bool(flags & 2), keepalive, user, pw, wt, wp, wqos, bool(flags & 32), level
        )


def decode(data, copy=True):
    """Decode exactly one whole packet from bytes (tests and tools)."""
    d = Decoder(copy=copy)
    d.receive_data(data)
    p = d.next_packet()
    if p is None or d.pending():
        raise MQTTError("not exactly one packet")
    return p

# MQTT 3.1.1 packet codec shared by the client and the broker (sans-I/O: bytes only).
#
# Encoding writes into a caller-owned bytearray (encode_publish allocates nothing on
# MicroPython when topic and payload are bytes-like). Decoding is incremental: feed any
# chunking of a stream to Decoder and take whole packets out with next_packet().
# Every malformed input raises MQTTError; nothing else escapes from decoding.
from midge.compat import const

_CONNECT = const(1)
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_PUBREC = const(5)
_PUBREL = const(6)
_PUBCOMP = const(7)
_SUBSCRIBE = const(8)
_SUBACK = const(9)
_UNSUBSCRIBE = const(10)
_UNSUBACK = const(11)
_PINGREQ = const(12)
_PINGRESP = const(13)
_DISCONNECT = const(14)

# Largest remaining length the 4-byte varint can carry, and so the largest packet.
_MAX_REMAINING = const(268435455)
_MAX_PACKET = const(268435460)
_REFUSED_PROTOCOL = const(1)  # CONNACK code for an unsupported protocol level

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


def _plain(x):
    return bytes(x) if isinstance(x, memoryview) else x


class Packet:
    type = 0

    def __eq__(self, other):
        if type(other) is not type(self):
            return False
        a, b = self.__dict__, other.__dict__
        for k in a:
            if _plain(a[k]) != _plain(b.get(k)):
                return False
        return len(a) == len(b)

    def __repr__(self):
        return "%s%r" % (type(self).__name__, self.__dict__)


class Connect(Packet):
    type = _CONNECT

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
    type = _CONNACK

    def __init__(self, session_present=False, return_code=0):
        self.session_present = session_present
        self.return_code = return_code


class Publish(Packet):
    type = _PUBLISH

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
    type = _SUBSCRIBE

    def __init__(self, pid, topics):
        self.pid = pid
        self.topics = topics  # list of (filter, qos)


class Suback(Packet):
    type = _SUBACK

    def __init__(self, pid, codes):
        self.pid = pid
        self.codes = codes  # list of 0, 1, 2 or 0x80


class Unsubscribe(Packet):
    type = _UNSUBSCRIBE

    def __init__(self, pid, filters):
        self.pid = pid
        self.filters = filters


Simple = Ack
PINGREQ_PKT = Simple(_PINGREQ)
PINGRESP_PKT = Simple(_PINGRESP)
DISCONNECT_PKT = Simple(_DISCONNECT)
_SIMPLE = (PINGREQ_PKT, PINGRESP_PKT, DISCONNECT_PKT)


# ---------------------------------------------------------------- encoding


def _b(s):
    return s.encode() if isinstance(s, str) else s


def _rl_size(n):
    if n > _MAX_REMAINING:
        raise ValueError("remaining length %d over %d" % (n, _MAX_REMAINING))
    k = 1
    while n > 127:
        n >>= 7
        k += 1
    return k


def _header(buf, b0, rl, at=0):
    """Write the fixed header at buf[at]; return the index where the variable header starts."""
    need = 1 + _rl_size(rl) + rl
    if at + need > len(buf):
        raise ValueError("packet of %d bytes does not fit a %d-byte buffer" % (need, len(buf) - at))
    buf[at] = b0
    i = at + 1
    while rl > 127:
        buf[i] = (rl & 0x7F) | 0x80
        rl >>= 7
        i += 1
    buf[i] = rl
    return i + 1


def _u16(buf, i, v):
    if not 0 <= v < 65536:
        raise ValueError("%d is not a 16-bit length or identifier" % v)
    buf[i] = v >> 8
    buf[i + 1] = v & 0xFF
    return i + 2


def publish_size(topic_len, payload_len, qos=0):
    """Bytes of a whole PUBLISH packet with a topic and payload of these byte lengths."""
    rl = 2 + topic_len + payload_len + (2 if qos else 0)
    return 1 + _rl_size(rl) + rl


def encode_publish(buf, topic, payload, qos=0, retain=False, dup=False, pid=0, at=0):
    """Write a PUBLISH into buf at index `at` (a driver appending to its output buffer needs
    no view); return the index after it, which is its length when at is 0. No allocation
    for bytes-like arguments."""
    topic = _b(topic)
    payload = _b(payload)
    tl = len(topic)
    pl = len(payload)
    rl = 2 + tl + pl
    b0 = 0x30 | (1 if retain else 0)
    if qos:
        if not 0 < pid < 65536 or qos > 2:
            raise ValueError("QoS %r with packet identifier %r" % (qos, pid))
        rl += 2
        b0 |= qos << 1 | (8 if dup else 0)
    i = _u16(buf, _header(buf, b0, rl, at), tl)
    buf[i : i + tl] = topic
    i += tl
    if qos:
        i = _u16(buf, i, pid)
    buf[i : i + pl] = payload
    return i + pl


def encode_ack(buf, type, pid):
    """PUBACK, PUBREC, PUBREL (flags 0b0010 added), PUBCOMP or UNSUBACK."""
    if not pid:
        raise ValueError("packet identifier 0")
    return _u16(buf, _header(buf, (type << 4) | (2 if type == _PUBREL else 0), 2), pid)


def _w16(out, v):
    out += b"\0\0"
    _u16(out, len(out) - 2, v)


def _fld(out, s):
    """Append a two-byte length and the bytes of s."""
    s = _b(s)
    _w16(out, len(s))
    out += s


def encode(p):
    """Encode any packet object into new bytes: the slow, general encoder, for packets off
    the hot path (encode_publish and encode_ack write into a buffer)."""
    t = p.type
    b0 = t << 4
    out = bytearray()
    if t == _PUBLISH:
        b0 |= p.qos << 1 | (8 if p.dup else 0) | (1 if p.retain else 0)
        _fld(out, p.topic)
        if p.qos:
            _w16(out, p.pid)
        out += _b(p.payload)
    elif t == _CONNACK:
        out.append(1 if p.session_present else 0)
        out.append(p.return_code)
    elif t == _CONNECT:
        flags = 2 if p.clean_session else 0
        if p.will_topic is not None:
            flags |= 4 | p.will_qos << 3 | (32 if p.will_retain else 0)
        if p.username is not None:
            flags |= 128
        if p.password is not None:
            if p.username is None:
                raise ValueError("password without username")
            flags |= 64
        _fld(out, b"MQIsdp" if p.proto_level == 3 else b"MQTT")
        out.append(p.proto_level)
        out.append(flags)
        _w16(out, p.keepalive)
        _fld(out, p.client_id)
        if flags & 4:
            _fld(out, p.will_topic)
            _fld(out, p.will_payload or b"")
        if flags & 128:
            _fld(out, p.username)
        if flags & 64:
            _fld(out, p.password)
    elif t < _PINGREQ:
        if not p.pid:
            raise ValueError("packet identifier 0")
        _w16(out, p.pid)
        if t == _SUBACK:
            out += bytes(p.codes)
        elif t == _SUBSCRIBE:
            for f, q in p.topics:
                _fld(out, f)
                out.append(q)
        elif t == _UNSUBSCRIBE:
            for f in p.filters:
                _fld(out, f)
        if t in (_PUBREL, _SUBSCRIBE, _UNSUBSCRIBE):
            b0 |= 2
    n = len(out)
    buf = bytearray(1 + _rl_size(n) + n)
    buf[_header(buf, b0, n) :] = out
    return bytes(buf)


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
    With copy=False a PUBLISH payload is a memoryview into the decoder's buffer, and with
    reuse=True PUBLISH and PUBACK/_PUBREC/_PUBREL/_PUBCOMP are one object each, refilled by
    every decode: both are valid until the next call into the decoder, and save allocations on
    hot paths that consume each packet at once. After an MQTTError the decoder stays failed.
    """

    def __init__(self, max_packet=_MAX_PACKET, copy=True, bufsize=256, reuse=False):
        self.max_packet = max_packet or _MAX_PACKET
        self.copy = copy
        # Few attributes: a broker holds one decoder per client.
        self._reuse = (Publish(""), Ack(0)) if reuse else None
        self._last = None  # (bytes, str) of the last PUBLISH topic
        self._buf = bytearray(bufsize)
        self._mv = memoryview(self._buf)
        self._start = self._end = 0
        self._need = 0  # whole size of the packet at _start once its header is known
        self.error = None

    def pending(self):
        """Bytes received but not yet returned as packets."""
        return self._end - self._start

    def _reserve(self, n):
        """Make room for n more bytes after _end (moving or growing the buffer)."""
        size = len(self._buf)
        if self._end + n <= size:
            return
        used = self._end - self._start
        tail = bytes(self._mv[self._start : self._end])
        if used + n > size:
            self._buf = bytearray(max(size * 2, used + n))
            self._mv = memoryview(self._buf)
        self._buf[0:used] = tail
        self._start = 0
        self._end = used

    def receive_data(self, data):
        n = len(data)
        self._reserve(n)
        self._buf[self._end : self._end + n] = data
        self._end += n

    def write_buffer(self, want=256):
        """A writable memoryview of free space (at least `want` bytes, more if the packet
        being received needs it); fill it, then call commit(n)."""
        if self._start == self._end:
            self._start = self._end = 0
        need = self._need - self._end + self._start
        self._reserve(need if need > want else want)
        return self._mv[self._end :] if self._end else self._mv  # no new view when empty

    def commit(self, n):
        self._end += n

    def next_packet(self):
        if self.error is None:
            try:
                return self._next()
            except MQTTError as e:
                self.error = e
        raise self.error

    def _next(self):
        s = self._start
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
                    raise MQTTError("remaining length over 4 bytes")
            need = self._need = i - s + rl
            if need > self.max_packet:
                raise MQTTError("packet of %d bytes over the maximum %d" % (need, self.max_packet))
        if self._end - s < need:
            return None
        i = s + 2
        while b[i - 1] & 0x80:
            i += 1
        pkt = self._decode(b[s], i, s + need)
        self._need = 0
        s += need
        if s == self._end:
            s = self._end = 0
        self._start = s
        return pkt

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
            s = "\x00"
        # One char per byte means ASCII: only U+0000 to rule out; otherwise the full rules.
        if ("\x00" in s) if len(s) == j - i else not _utf8_ok(s, j - i):
            raise MQTTError("ill-formed UTF-8 or U+0000")
        return s, j

    def _pid(self, i, end):
        pid = (self._buf[i] << 8) | self._buf[i + 1] if i + 2 <= end else 0
        if not pid:
            raise MQTTError("missing packet identifier or 0")
        return pid

    def _decode(self, b0, i, end):
        t = b0 >> 4
        flags = b0 & 15
        b = self._buf
        if t == _PUBLISH:
            qos = (flags >> 1) & 3
            if qos == 3 or flags & 8 and not qos:
                raise MQTTError("PUBLISH flags 0x%x" % flags)
            j = self._field(i, end)
            k = self._last
            if k is not None and j - i - 2 == len(k[0]) and b.find(k[0], i + 2, j) == i + 2:
                topic = k[1]  # the same topic as the last PUBLISH: no new str
            else:
                topic = self._str(i, end)[0]
                if not topic or "+" in topic or "#" in topic:
                    raise MQTTError("bad topic name %r" % topic)
                self._last = (bytes(self._mv[i + 2 : j]), topic)
            i = j
            pid = 0
            if qos:
                pid = self._pid(i, end)
                i += 2
            payload = self._mv[i:end]
            if self.copy:
                payload = bytes(payload)
            p = self._reuse
            p = Publish(topic) if p is None else p[0]
            p.__init__(topic, payload, qos, flags & 1 > 0, flags & 8 > 0, pid)
            return p
        rl = end - i
        if t in (0, 15) or flags != (2 if t in (_PUBREL, _SUBSCRIBE, _UNSUBSCRIBE) else 0):
            raise MQTTError("packet type %d flags 0x%x" % (t, flags))
        if t == _CONNECT:
            return self._connect(i, end)
        if t >= _PINGREQ:
            if rl:
                raise MQTTError("packet type %d with a body" % t)
            return _SIMPLE[t - _PINGREQ]
        if t <= _PUBCOMP or t == _UNSUBACK:  # CONNACK and the acks: exactly 2 bytes
            if rl != 2:
                raise MQTTError("packet type %d of length %d" % (t, rl))
            if t != _CONNACK:
                a = self._reuse  # for the publish flow's hot path
                a = Ack(t) if a is None or t == _UNSUBACK else a[1]
                a.__init__(t, self._pid(i, end))
                return a
            sp, rc = b[i], b[i + 1]
            if sp > 1 or rc > 5 or sp and rc:
                raise MQTTError("CONNACK %d %d" % (sp, rc))
            return Connack(sp == 1, rc)
        pid = self._pid(i, end)
        i += 2
        items = []
        while i < end:
            if t == _SUBACK:
                f = b[i]
                if f > 2 and f != 0x80:
                    raise MQTTError("SUBACK code 0x%x" % f)
                i += 1
            else:
                f, i = self._str(i, end)
                if not f:
                    raise MQTTError("empty topic filter")
                if t == _SUBSCRIBE:
                    if i >= end or b[i] > 2:
                        raise MQTTError("bad requested QoS")
                    f = (f, b[i])
                    i += 1
            items.append(f)
        if not items:
            raise MQTTError("packet type %d with no payload" % t)
        return (Suback if t == _SUBACK else Subscribe if t == _SUBSCRIBE else Unsubscribe)(
            pid, items
        )

    def _connect(self, i, end):
        b = self._buf
        name, i = self._str(i, end)
        if i + 4 > end:
            raise MQTTError("CONNECT too short")
        level, flags = b[i], b[i + 1]
        keepalive = (b[i + 2] << 8) | b[i + 3]
        i += 4
        if name not in ("MQTT", "MQIsdp"):
            raise MQTTError("protocol name %r" % name)
        if level & 127 != (4 if name == "MQTT" else 3):
            raise MQTTError("protocol level %d" % level, _REFUSED_PROTOCOL)
        will = flags & 4
        wqos = (flags >> 3) & 3
        # reserved bit; will QoS/retain without will; will QoS 3; password without username
        if flags & 1 or (not will and flags & 0x38) or wqos == 3 or flags & 0xC0 == 0x40:
            raise MQTTError("CONNECT flags 0x%x" % flags)
        cid, i = self._str(i, end)
        wt = wp = user = pw = None
        if will:
            wt, i = self._str(i, end)
            if not wt or "+" in wt or "#" in wt:
                raise MQTTError("bad will topic %r" % wt)
            j = self._field(i, end)
            wp = bytes(self._mv[i + 2 : j])
            i = j
        if flags & 128:
            user, i = self._str(i, end)
        if flags & 64:
            j = self._field(i, end)
            pw = bytes(self._mv[i + 2 : j])
            i = j
        if i != end:
            raise MQTTError("bytes after the CONNECT payload")
        return Connect(cid, flags & 2 > 0, keepalive, user, pw, wt, wp, wqos, flags & 32 > 0, level)

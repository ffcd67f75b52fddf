# The broker's per-packet protocol handling (CONNECT, SUBSCRIBE, acks ...) on top of
# broker_core.Core, kept in its own module so each compiles in a small MicroPython heap.
# Import it as broker_core.Broker (broker_core imports this module at its end).
from midge import codec, topics
from midge.broker_core import Core
from midge.broker_sess import INFO, WARN, Msg, Session, ack
from midge.compat import const

# MQTT packet types, folded into the bytecode (3.1.1 section 2.2.1)
_CONNECT = const(1)
_PUBLISH = const(3)
_PUBACK = const(4)
_PUBREC = const(5)
_PUBREL = const(6)
_PUBCOMP = const(7)
_SUBSCRIBE = const(8)
_UNSUBSCRIBE = const(10)
_PINGREQ = const(12)
_DISCONNECT = const(14)
# session changes the store journals one by one (codes: persist_load)
_DONE = const(4)
_RECD = const(5)
_RX2_DONE = const(7)


class Broker(Core):
    def feed(self, c, data, now):
        """Bytes arrived on c: handle every complete packet in them."""
        if c.closing:
            return
        c.rx = now
        self.rx_bytes += len(data)
        d = c.dec
        try:
            d.receive_data(data)
            while not c.closing and d.pending():
                p = d.next_packet()
                if p is None:
                    break
                self._packet(c, p, now)
        except codec.MQTTError as e:
            if c.sess is None and e.code:
                self._send(c, codec.encode(codec.Connack(False, e.code)))
            self._close(c, "protocol error: %s" % e.reason, now)

    def _packet(self, c, p, now):
        t = p.type
        s = c.sess
        if s is None:
            if t != _CONNECT:
                raise codec.MQTTError("first packet is not CONNECT", None)
            self._connect(c, p, now)
            return
        if t == _PUBLISH:
            self._on_publish(c, s, p, now)
        elif t == _PUBACK or t == _PUBCOMP:
            # PUBACK completes a QoS 1 message, PUBCOMP a QoS 2 one past PUBREC; else ignored
            e = s.inflight.get(p.pid, 0)
            if (e is None) if t == _PUBCOMP else (e and e[1] & 3 == 1):
                del s.inflight[p.pid]
                self._changed(s, _DONE, p.pid)
                self._drain(s)
        elif t == _PUBREC:
            e = s.inflight.get(p.pid)
            if e is not None and e[1] & 3 == 2:
                s.inflight[p.pid] = None
                self._changed(s, _RECD, p.pid)
            self._send(c, ack(0x62, p.pid))
        elif t == _PUBREL:
            if s.rx2 and p.pid in s.rx2:
                s.rx2.discard(p.pid)
                self._changed(s, _RX2_DONE, p.pid)
            self._send(c, ack(0x70, p.pid))
        elif t == _SUBSCRIBE:
            self._subscribe(c, s, p)
        elif t == _UNSUBSCRIBE:
            for f in p.filters:
                if s.subs.pop(f, None) is not None:
                    self.index.remove(f, s)
            self._changed(s)
            self._send(c, ack(0xB0, p.pid))
        elif t == _PINGREQ:
            self._send(c, codec.PINGRESP_BYTES)
        elif t == _DISCONNECT:
            c.will = None
            self._close(c, "DISCONNECT", now, False, INFO)
        else:
            raise codec.MQTTError("unexpected packet type %d from a client" % t, None)

    def _connect(self, c, p, now):
        if p.proto_level & 127 not in (3, 4):
            self._refuse(c, 1, "protocol level %d" % p.proto_level, now)
            return
        if p.client_id:
            cid = p.client_id
        elif p.clean_session:
            self.nid += 1
            cid = "midge-%d-%d" % (now & 0xFFFF, self.nid)
        else:
            self._refuse(c, 2, "empty client id with clean_session=0", now)
            return
        rc = self._authenticate(c, p)
        if rc:
            self._refuse(c, rc, "not authorised (code %d)" % rc, now)
            return
        c.user = p.username
        old = self.sessions.get(cid)
        if old is not None and old.conn is not None:
            self._close(old.conn, "taken over by a new connection", now)
            old = self.sessions.get(cid)
        if old is not None and p.clean_session:
            self._drop_session(old)
            old = None
        present = old is not None
        s = old or Session(cid, p.clean_session)
        self.sessions[cid] = s
        s.conn = c
        c.sess = s
        br = p.proto_level > 127  # a bridge (Mosquitto's 0x84): no echo, retain as published
        if s.br != br:
            s.br = br
        c.ka = p.keepalive * 1500
        w = p.will_topic
        if w is not None:
            if self.auth and not self.auth.allowed(c.user, cid, w, True):
                # as Mosquitto 2: the client is let in, its will is dropped (never published)
                self.log(WARN, "%s: will to %r denied by ACL, dropped" % (cid, w))
            else:
                c.will = Msg(w, p.will_payload or b"", p.will_qos, p.will_retain)
        self._send(c, b"\x20\x02\x01\x00" if present else b"\x20\x02\x00\x00")  # CONNACK
        if self.verbose:
            self.log(
                INFO,
                "connected %s (%s) clean=%d keepalive=%d"
                % (cid, c.name(), 1 if p.clean_session else 0, p.keepalive),
            )
        if present:
            self._resume(c, s)
        else:
            self._changed(s)  # new: written whole (a resumed one is in the journal already)

    def _authenticate(self, c, p):
        a = self.auth
        anon = self.conf["allow_anonymous"]
        if p.username is None:
            if anon is None:
                anon = c.local and not (a and a.has_passwords())
            return 0 if anon else 5
        if a is None or not a.has_passwords():
            return 0
        return 0 if a.check(p.username, p.password) else 4

    def _refuse(self, c, rc, why, now):
        self._send(c, codec.encode(codec.Connack(False, rc)))
        self._close(c, "CONNECT refused: " + why, now, False)

    def _resume(self, c, s):
        """Reconnected persistent session: resend what is in flight (DUP), then the queue."""
        for pid, e in s.inflight.items():
            if e is None:
                self._send(c, ack(0x62, pid))
            else:
                m, f = e
                q = f & 3
                self._send(c, m.head(q, f & 4, True))
                self._send(c, bytes((pid >> 8, pid & 255)))
                self._send(c, m.payload)
                self.tx_msgs += 1
        self._drain(s)

    def _subscribe(self, c, s, p):
        codes = []
        new = []
        mx = self.conf["max_subscriptions"]
        for f, q in p.topics:
            if self.auth and not self.auth.allowed(c.user, s.cid, f, False):
                self.log(WARN, "%s: subscribe to %r denied by ACL" % (s.cid, f))
                codes.append(0x80)
                continue
            if mx and f not in s.subs and len(s.subs) >= mx:
                self.log(WARN, "%s: max_subscriptions (%d) reached, %r refused" % (s.cid, mx, f))
                codes.append(0x80)
                continue
            if f in s.subs:
                self.index.remove(f, s)
            s.subs[f] = q
            self.index.add(f, s, q)
            codes.append(q)
            new.append((f, q))
        self._send(c, codec.encode(codec.Suback(p.pid, codes)))
        self._changed(s)
        owed = c.owed or []
        for f, q in new:
            for t in self.retained:
                if topics.matches(f, t):
                    owed.append((t, q))
        if owed:
            c.owed = owed
            self.resume(c)

# Cross-check midge's codec against a real paho-mqtt client (CPython only).
#
# A tiny listener on 127.0.0.1 speaks MQTT with midge's codec only: it decodes every byte the
# real paho client sends with codec.Decoder (fed through write_buffer()/commit()) and answers
# with packets encoded by codec.encode. paho accepting those answers (callbacks fire, QoS 2
# completes, pings keep the connection up) checks midge's encoder against paho's parser; the
# decoded CONNECT/SUBSCRIBE/PUBLISH/... checks midge's decoder against paho's encoder.
# All 14 packet types cross the wire. Everything has a timeout; the listener stops itself.
import socket
import threading
import time

import paho.mqtt.client as mqtt
import support
from midge import codec

TOPIC = "sensors/drone01/altitude"
WAIT = 8.0


class MidgeListener:
    """Accept one connection and answer it with midge-encoded packets."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(WAIT)
        self.port = self.sock.getsockname()[1]
        self.got = []  # decoded packets, in order
        self.error = None
        self.pings = threading.Semaphore(0)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def types(self):
        return [p.type for p in self.got]

    def first(self, t):
        return next(p for p in self.got if p.type == t)

    def _run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError as e:
            self.error = e
            return
        with conn:
            conn.settimeout(0.2)
            self._serve(conn)
        self.sock.close()

    def _serve(self, conn):
        d = codec.Decoder()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            mv = d.write_buffer()
            try:
                n = conn.recv_into(mv)
            except socket.timeout:
                continue
            except OSError:
                return
            if not n:
                return
            d.commit(n)
            try:
                while True:
                    p = d.next_packet()
                    if p is None:
                        break
                    self.got.append(p)
                    if p.type == support.DISCONNECT:
                        return
                    for reply in self._answer(p):
                        conn.sendall(codec.encode(reply))
            except codec.MQTTError as e:
                self.error = e
                return

    def _answer(self, p):
        c = codec
        t = p.type
        if t == support.CONNECT:
            return [c.Connack(False, 0)]
        if t == support.SUBSCRIBE:
            return [
                c.Suback(p.pid, [q for _, q in p.topics]),
                c.Publish(TOPIC, b"110 feet", 0),
                c.Publish(TOPIC, b"120 feet", 1, False, False, 41),
                c.Publish(TOPIC, b"130 feet", 2, True, False, 42),
            ]
        if t == support.PUBREC:  # paho received our QoS 2 PUBLISH
            return [c.Ack(support.PUBREL, p.pid)]
        if t == support.PUBLISH and p.qos == 1:
            return [c.Ack(support.PUBACK, p.pid)]
        if t == support.PUBLISH and p.qos == 2:
            return [c.Ack(support.PUBREC, p.pid)]
        if t == support.PUBREL:
            return [c.Ack(support.PUBCOMP, p.pid)]
        if t == support.UNSUBSCRIBE:
            return [c.Ack(support.UNSUBACK, p.pid)]
        if t == support.PINGREQ:
            self.pings.release()
            return [c.Simple(support.PINGRESP)]
        return []


def _client(protocol=mqtt.MQTTv311, **kw):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol, **kw)
    ev = {k: threading.Event() for k in ("connect", "subscribe", "unsubscribe", "disconnect")}
    state = {"messages": [], "granted": None, "rc": None}

    def on_connect(client, userdata, flags, rc, props):
        state["rc"] = rc
        ev["connect"].set()

    def on_subscribe(client, userdata, mid, rcs, props):
        state["granted"] = [int(r.value) for r in rcs]
        ev["subscribe"].set()

    def on_message(client, userdata, msg):
        state["messages"].append((msg.topic, msg.payload, msg.qos, msg.retain))

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_unsubscribe = lambda *a: ev["unsubscribe"].set()
    c.on_message = on_message
    c.on_disconnect = lambda *a: ev["disconnect"].set()
    return c, ev, state


def _wait_until(cond, timeout=WAIT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_paho_client_against_midge_codec():
    srv = MidgeListener()
    c, ev, state = _client(client_id="drone01")
    password = "pw-" + str(time.monotonic_ns())  # generated at test time, never printed
    c.username_pw_set("drone", password)
    c.will_set("drones/drone01/status", b"offline", qos=1, retain=True)
    c.connect("127.0.0.1", srv.port, keepalive=1)
    c.loop_start()
    try:
        assert ev["connect"].wait(WAIT), srv.error
        assert state["rc"] == 0  # paho parsed midge's CONNACK
        c.subscribe(TOPIC, qos=1)
        assert ev["subscribe"].wait(WAIT), srv.error
        assert state["granted"] == [1]  # midge's SUBACK
        # midge's PUBLISH at QoS 0, 1 and 2 (with PUBREL) delivered by paho
        assert _wait_until(lambda: len(state["messages"]) == 3), state["messages"]
        c.publish(TOPIC, "100 feet", qos=0)  # the seeds' scenario
        c.publish(TOPIC, "100 feet", qos=1).wait_for_publish(WAIT)  # midge's PUBACK
        c.publish(TOPIC, "100 feet", qos=2).wait_for_publish(WAIT)  # PUBREC, PUBCOMP
        c.unsubscribe(TOPIC)
        assert ev["unsubscribe"].wait(WAIT), srv.error  # midge's UNSUBACK
        # paho only sends a second PINGREQ after it has parsed the first PINGRESP
        assert srv.pings.acquire(timeout=WAIT) and srv.pings.acquire(timeout=WAIT)
        assert not ev["disconnect"].is_set()
    finally:
        c.disconnect()
        c.loop_stop()
        srv.thread.join(WAIT)
    assert srv.error is None, srv.error
    assert not srv.thread.is_alive()

    got = sorted(state["messages"], key=lambda m: m[1])  # QoS 0/1/2 may be delivered in any order
    assert got == [
        (TOPIC, b"110 feet", 0, False),
        (TOPIC, b"120 feet", 1, False),
        (TOPIC, b"130 feet", 2, True),
    ]

    # What midge decoded from paho's bytes
    types = srv.types()
    for t in (
        support.CONNECT,
        support.SUBSCRIBE,
        support.PUBLISH,
        support.PUBACK,
        support.PUBREC,
        support.PUBREL,
        support.PUBCOMP,
        support.UNSUBSCRIBE,
        support.PINGREQ,
        support.DISCONNECT,
    ):
        assert t in types, (t, types)
    assert types[0] == support.CONNECT and types[-1] == support.DISCONNECT
    con = srv.first(support.CONNECT)
    assert con.client_id == "drone01" and con.proto_level == 4
    assert con.clean_session is True and con.keepalive == 1
    assert con.username == "drone" and bytes(con.password) == password.encode()
    assert con.will_topic == "drones/drone01/status" and bytes(con.will_payload) == b"offline"
    assert con.will_qos == 1 and con.will_retain is True
    sub = srv.first(support.SUBSCRIBE)
    assert [tuple(x) for x in sub.topics] == [(TOPIC, 1)] and sub.pid > 0
    pubs = [p for p in srv.got if p.type == support.PUBLISH]
    assert [(p.topic, bytes(p.payload), p.qos) for p in pubs] == [
        (TOPIC, b"100 feet", 0),
        (TOPIC, b"100 feet", 1),
        (TOPIC, b"100 feet", 2),
    ]
    assert pubs[0].pid == 0 and pubs[1].pid > 0 and pubs[2].pid > 0
    # paho's answers to midge's QoS 1 and 2 PUBLISH carry midge's packet ids
    assert srv.first(support.PUBACK).pid == 41 and srv.first(support.PUBREC).pid == 42
    assert srv.first(support.PUBCOMP).pid == 42
    assert srv.first(support.PUBREL).pid == pubs[2].pid  # paho's PUBREL (flags 0010)
    assert srv.first(support.UNSUBSCRIBE).filters == [TOPIC]


def test_paho_mqtt31_connect_decodes_as_mqisdp():
    srv = MidgeListener()
    c, ev, state = _client(protocol=mqtt.MQTTv31, client_id="drone01")
    c.connect("127.0.0.1", srv.port, keepalive=30)
    c.loop_start()
    try:
        assert ev["connect"].wait(WAIT), srv.error
        assert state["rc"] == 0
    finally:
        c.disconnect()
        c.loop_stop()
        srv.thread.join(WAIT)
    assert srv.error is None, srv.error
    con = srv.first(support.CONNECT)
    assert con.proto_level == 3 and con.client_id == "drone01" and con.keepalive == 30
    assert srv.types()[-1] == support.DISCONNECT

# midge.umqtt.MQTTClient used the way umqtt.simple sketches use it, against real Mosquitto.
import support
from midge.compat import ticks_diff, ticks_ms
from midge.umqtt import MQTTClient
from support import raises, unique


def client(**kw):
    host, port = support.mosquitto()
    return MQTTClient(unique("u").encode(), host, port, **kw)


def test_umqtt_sketch_publish_subscribe():
    topic = unique("u/t").encode()
    got = []
    c = client(keepalive=30)
    c.set_callback(lambda t, m: got.append((t, m)))
    assert c.connect() is False
    c.subscribe(topic)
    c.publish(topic, b"one")
    c.publish(topic, "two", qos=1)
    c.publish(topic, b"three", retain=False, qos=2)
    t0 = ticks_ms()
    while len(got) < 3 and ticks_diff(ticks_ms(), t0) < 3000:
        c.wait_msg()
    assert got == [(topic, b"one"), (topic, b"two"), (topic, b"three")]
    t0 = ticks_ms()
    c.check_msg()  # nothing waiting: returns at once
    assert ticks_diff(ticks_ms(), t0) < 500
    c.ping()
    c.wait_msg()  # PINGRESP
    c.disconnect()


def test_umqtt_last_will_and_errors():
    topic = unique("u/will")
    w = client()
    got = []
    w.set_callback(lambda t, m: got.append(m))
    w.connect()
    w.subscribe(topic, 1)
    d = client(keepalive=10)
    d.set_last_will(topic, b"gone", qos=1)
    d.connect()
    d.sock.close()
    t0 = ticks_ms()
    while not got and ticks_diff(ticks_ms(), t0) < 3000:
        w.wait_msg()
    assert got == [b"gone"]
    w.disconnect()
    host, _ = support.mosquitto()
    e = raises(OSError, MQTTClient("x", host, 1).connect)  # umqtt code catches OSError
    assert "cannot connect" in str(e)

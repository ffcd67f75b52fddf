# Heap discipline of the codec's hot paths, measured with gc.mem_alloc() on MicroPython
# (CPython has no equivalent figure: these tests skip there).
import gc

import support
from midge import codec
from support import MICROPYTHON, skip

TOPIC = b"sensors/drone01/altitude"
PAYLOAD = b"100 feet"


def _heap_per_call(fn, n=32):
    if not MICROPYTHON:
        skip("gc.mem_alloc() is MicroPython's")
    fn()
    gc.collect()
    gc.disable()
    try:
        a = gc.mem_alloc()  # type: ignore[attr-defined]
        for _ in range(n):
            fn()
        return (gc.mem_alloc() - a) / n  # type: ignore[attr-defined]
    finally:
        gc.enable()


def test_encode_publish_into_buffer_allocates_nothing():
    buf = bytearray(128)
    assert _heap_per_call(lambda: codec.encode_publish(buf, TOPIC, PAYLOAD)) == 0
    assert _heap_per_call(lambda: codec.encode_publish(buf, TOPIC, PAYLOAD, 1, True, True, 9)) == 0
    assert (
        _heap_per_call(lambda: codec.encode_publish(buf, TOPIC, PAYLOAD, 2, False, False, 65535))
        == 0
    )


def test_encode_acks_allocate_nothing():
    buf = bytearray(8)
    for t in (support.PUBACK, support.PUBREC, support.PUBREL, support.PUBCOMP):
        assert _heap_per_call(lambda t=t: codec.encode_ack(buf, t, 77)) == 0


def _publish_wire(topic, payload):
    buf = bytearray(256)
    return bytes(buf[: codec.encode_publish(buf, topic, payload, 1, False, False, 3)])


def _decode_cost(d, wire):
    def one():
        d.receive_data(wire)
        d.next_packet()

    return _heap_per_call(one)


def test_decode_publish_allocates_only_the_packet():
    # The Publish object (128 B on the 64-bit unix port) and the payload view; the topic str
    # is decoded once and reused while the same topic repeats. Nothing per payload byte.
    wire = _publish_wire(TOPIC, PAYLOAD)
    per = _decode_cost(codec.Decoder(copy=False), wire)
    assert 0 < per <= 160, per
    assert _decode_cost(codec.Decoder(copy=False), _publish_wire(TOPIC, b"x" * 80)) == per


def test_decode_publish_with_reuse_allocates_one_view():
    # reuse=True refills one Publish: what is left is the payload itself (a view, or a copy).
    wire = _publish_wire(TOPIC, PAYLOAD)
    view = _decode_cost(codec.Decoder(copy=False, reuse=True), wire)
    copied = _decode_cost(codec.Decoder(copy=True, reuse=True), wire)
    assert view <= 32, view
    assert view < copied <= 96, copied


def test_decode_new_topic_costs_its_str_once():
    d = codec.Decoder(copy=False, reuse=True)
    a, b = _publish_wire(TOPIC, PAYLOAD), _publish_wire(b"sensors/drone40/temperature", PAYLOAD)

    def alternate():
        d.receive_data(a)
        p = d.next_packet()
        assert p.topic == "sensors/drone01/altitude"
        d.receive_data(b)
        assert d.next_packet().topic == "sensors/drone40/temperature"

    # two changes of topic per call: each costs the new str, its bytes and a pair (~288 B here)
    assert 128 < _heap_per_call(alternate) <= 640


def test_decoder_buffer_is_reused_when_drained():
    d = codec.Decoder(copy=False, bufsize=64)
    buf = bytearray(64)
    wire = bytes(buf[: codec.encode_publish(buf, TOPIC, PAYLOAD)])
    for _ in range(100):
        d.receive_data(wire)
        assert d.next_packet() is not None
    assert len(d._buf) == 64  # never grew: drained buffers restart at 0

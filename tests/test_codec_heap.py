# Heap discipline of the codec's hot paths, measured with gc.mem_alloc() on MicroPython
# (CPython has no equivalent figure: these tests skip there).
import gc

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
    for t in (codec.PUBACK, codec.PUBREC, codec.PUBREL, codec.PUBCOMP):
        assert _heap_per_call(lambda t=t: codec.encode_ack(buf, t, 77)) == 0
    assert _heap_per_call(lambda: codec.encode_connack(buf, False, 0)) == 0


def test_decode_publish_allocates_only_the_packet():
    # The Publish object (128 B on the 64-bit unix port), its topic str with the view it is
    # decoded from, and the payload view: nothing per byte of payload, nothing that grows.
    buf = bytearray(128)
    n = codec.encode_publish(buf, TOPIC, PAYLOAD, 1, False, False, 3)
    wire = bytes(buf[:n])
    d = codec.Decoder(copy=False)

    def one():
        d.receive_data(wire)
        d.next_packet()

    per = _heap_per_call(one)
    assert 0 < per <= 320, per
    big = bytes(buf[: codec.encode_publish(buf, TOPIC, b"x" * 80, 1, False, False, 3)])

    def one_big():
        d.receive_data(big)
        d.next_packet()

    assert _heap_per_call(one_big) == per  # a view: the payload size does not matter


def test_decoder_buffer_is_reused_when_drained():
    d = codec.Decoder(copy=False, bufsize=64)
    buf = bytearray(64)
    wire = bytes(buf[: codec.encode_publish(buf, TOPIC, PAYLOAD)])
    for _ in range(100):
        d.receive_data(wire)
        assert d.next_packet() is not None
    assert len(d._buf) == 64  # never grew: drained buffers restart at 0

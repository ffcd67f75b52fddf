# Codec micro-benchmark that runs unchanged on MicroPython and CPython; prints one JSON line.
# Run by host_tools/bench_codec.py: micropython -X heapsize=128K bench_codec_run.py N
import gc
import json
import sys
import time

MP = sys.implementation.name == "micropython"


def now_us():
    return time.ticks_us() if MP else int(time.perf_counter() * 1e6)  # type: ignore[attr-defined]


def elapsed_us(t0):
    return time.ticks_diff(time.ticks_us(), t0) if MP else now_us() - t0  # type: ignore[attr-defined]


def heap():
    return gc.mem_alloc() if MP else 0  # type: ignore[attr-defined]


gc.collect()
h0 = heap()
from midge import codec  # noqa: E402

gc.collect()
import_heap = heap() - h0

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
TOPIC = b"sensors/drone01/altitude"
PAYLOAD = b"100 feet"
buf = bytearray(256)
n1 = codec.encode_publish(buf, TOPIC, PAYLOAD, 1, False, False, 1)
WIRE1 = bytes(buf[:n1])
STREAM = WIRE1 * 16  # 16 packets per read, as a driver sees them


def per_op(fn, n, off=False):
    """(ops/s, heap bytes per op); off=True turns the collector off so the heap delta counts
    every allocation (keep n small then)."""
    fn()
    gc.collect()
    if MP and off:
        gc.disable()
    a = heap()
    t0 = now_us()
    for _ in range(n):
        fn()
    us = elapsed_us(t0)
    b = heap()
    if MP:
        gc.enable()
        gc.collect()
    return n * 1e6 / max(us, 1), (b - a) / n


def enc_q0():
    codec.encode_publish(buf, TOPIC, PAYLOAD)


def enc_q1():
    codec.encode_publish(buf, TOPIC, PAYLOAD, 1, False, False, 7)


def enc_ack():
    codec.encode_ack(buf, 4, 7)  # PUBACK


dec_copy = codec.Decoder(copy=True)
dec_view = codec.Decoder(copy=False)
dec_reuse = codec.Decoder(copy=False, reuse=True)


def dec1(d):
    d.receive_data(WIRE1)
    d.next_packet()


def dec16(d):
    d.receive_data(STREAM)
    while d.next_packet() is not None:
        pass


out = {"runtime": sys.implementation.name, "import_heap": import_heap}
K = 64  # heap is sampled over few ops: the collector is off meanwhile
for name, fn in (
    ("encode_publish_q0", enc_q0),
    ("encode_publish_q1", enc_q1),
    ("encode_puback", enc_ack),
):
    out[name] = [per_op(fn, N)[0], per_op(fn, K, True)[1]]
for name, d in (
    ("decode_publish_copy", dec_copy),
    ("decode_publish_view", dec_view),
    ("decode_publish_reuse", dec_reuse),
):
    out[name] = [per_op(lambda d=d: dec1(d), N)[0], per_op(lambda d=d: dec1(d), K, True)[1]]
    r16 = per_op(lambda d=d: dec16(d), N // 16)[0] * 16
    out[name + "_x16"] = [r16, per_op(lambda d=d: dec16(d), 4, True)[1] / 16]
print(json.dumps(out))

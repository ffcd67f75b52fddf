# Hostile input on both runtimes: valid packets with bytes flipped, cut or inserted, and plain
# random bytes, fed to the Decoder in random chunks. Only codec.MQTTError may come out, and the
# decoder must finish every stream (a bounded loop: it can never spin on the same bytes).
# Deterministic: a small xorshift generator, so MicroPython and CPython see the same streams.
import support
from midge import codec

SEEDS = [
    codec.encode(codec.Connect("drone01", True, 60, "u", b"p", "w/t", b"bye", 1, True)),
    codec.encode(codec.Connect("c", False, 0, proto_level=3)),
    codec.encode(codec.Connack(True, 0)),
    codec.encode(codec.Publish("sensors/drone01/altitude", b"100 feet", 1, False, False, 7)),
    codec.encode(codec.Publish("a/\u00e9/\u20ac", b"", 2, True, True, 65535)),
    codec.encode(codec.Ack(support.PUBREL, 3)),
    codec.encode(codec.Subscribe(9, [("sensors/+/altitude", 1), ("#", 2)])),
    codec.encode(codec.Suback(9, [1, 0x80])),
    codec.encode(codec.Unsubscribe(4, ["a/#", "b"])),
    codec.encode(codec.Ack(support.UNSUBACK, 4)),
    codec.PINGREQ_BYTES + codec.PINGRESP_BYTES + codec.DISCONNECT_BYTES,
]


class Rand:
    def __init__(self, seed):
        self.s = seed or 1

    def next(self, n):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x % n


def mutate(r, data):
    b = bytearray(data)
    for _ in range(1 + r.next(3)):
        k = r.next(4)
        i = r.next(len(b) + 1)
        if k == 0 and b:
            b[i % len(b)] = r.next(256)  # flip a byte
        elif k == 1:
            b = b[:i] + bytes([r.next(256)]) + b[i:]  # insert a byte
        elif k == 2 and b:
            i %= len(b)
            b = b[:i] + b[i + 1 :]  # drop a byte
        else:
            b = b[: i or 1]  # cut the stream
    return bytes(b)


def feed_all(r, stream, copy):
    """Feed stream in random chunks; return the packets, or the MQTTError that ended it."""
    d = codec.Decoder(max_packet=1 + r.next(600), copy=copy)
    got = []
    i = 0
    while i < len(stream):
        n = 1 + r.next(12)
        d.receive_data(stream[i : i + n])
        i += n
        for _ in range(len(stream) + 1):  # more packets than bytes would be a loop
            try:
                p = d.next_packet()
            except codec.MQTTError as e:
                assert e.reason
                return got, e
            if p is None:
                break
            got.append(p)
        else:
            raise AssertionError("decoder keeps returning packets without consuming bytes")
    return got, None


def test_mutated_packets_only_raise_mqtterror():
    r = Rand(20261122)
    errors = 0
    for k in range(400):
        a = SEEDS[r.next(len(SEEDS))]
        b = SEEDS[r.next(len(SEEDS))]
        _, err = feed_all(r, mutate(r, a + b), k & 1 == 0)
        errors += err is not None
    assert 50 < errors < 400  # the mutations do hit the rules, and not every stream is fatal


def test_random_bytes_only_raise_mqtterror():
    r = Rand(7)
    for _ in range(200):
        stream = bytes(r.next(256) for _ in range(r.next(64)))
        feed_all(r, stream, True)


def test_unmutated_seeds_decode_in_any_chunking():
    r = Rand(99)
    whole = b"".join(SEEDS)
    for _ in range(20):
        d = codec.Decoder(copy=False)
        got = []
        i = 0
        while i < len(whole):
            n = 1 + r.next(9)
            d.receive_data(whole[i : i + n])
            i += n
            p = d.next_packet()
            while p is not None:
                got.append(codec.encode(p))
                p = d.next_packet()
        assert b"".join(got) == whole

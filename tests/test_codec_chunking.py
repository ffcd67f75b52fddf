# The incremental Decoder gives the same packets whatever the chunking of the stream: all at
# once, one byte at a time, random-sized chunks (fixed seed), every split point, and the
# zero-copy write_buffer()/commit() path; copy=False gives memoryview payloads.
import support
from midge import codec
from support import plain

# Documented fields per packet type (compared here, not through the classes' own __eq__).
_FIELDS = {
    support.CONNECT: ("client_id", "clean_session", "keepalive", "username", "password"),
    support.CONNACK: ("session_present", "return_code"),
    support.PUBLISH: ("topic", "payload", "qos", "retain", "dup", "pid"),
    support.SUBSCRIBE: ("pid", "topics"),
    support.SUBACK: ("pid", "codes"),
    support.UNSUBSCRIBE: ("pid", "filters"),
}


def snapshot(p):
    """A plain tuple of a packet's type and fields, safe to keep after later decoder calls."""
    return (p.type,) + tuple(plain(getattr(p, f)) for f in _FIELDS.get(p.type, ("pid",)))


def packets():
    c = codec
    t = "sensors/drone01/altitude"
    return [
        c.Connect("drone01", True, 60),
        c.Connect("c1", False, 300, "u", b"pw", "w/t", b"bye", 1, True),
        c.Connack(True, 0),
        c.Subscribe(1, [(t, 1), ("a/#", 2)]),
        c.Suback(1, [1, 0x80]),
        c.Publish(t, b"100 feet"),
        c.Publish(t, b"100 feet", 1, True, False, 10),
        c.Publish("big", bytes(range(256)) + b"tail", 2, False, True, 65535),  # 2-byte rl
        c.Publish("e", b""),
        c.Ack(support.PUBACK, 10),
        c.Ack(support.PUBREC, 11),
        c.Ack(support.PUBREL, 11),
        c.Ack(support.PUBCOMP, 11),
        c.Unsubscribe(2, [t]),
        c.Ack(support.UNSUBACK, 2),
        c.Simple(support.PINGREQ),
        c.Simple(support.PINGRESP),
        c.Publish("t\u00e9/\u65e5", b"\x00\xff"),
        c.Simple(support.DISCONNECT),
    ]


def stream():
    return b"".join(codec.encode(p) for p in packets())


def expected():
    return [snapshot(p) for p in packets()]


def drain(d, out):
    while True:
        p = d.next_packet()
        if p is None:
            return
        out.append(snapshot(p))


def feed_chunks(data, sizes, **kw):
    d = codec.Decoder(**kw)
    out = []
    i = 0
    k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        k += 1
        d.receive_data(data[i : i + n])
        i += n
        drain(d, out)
    return out


def lcg_sizes(seed, count, top):
    """Deterministic chunk sizes 1..top (same sequence on both runtimes)."""
    out = []
    x = seed
    for _ in range(count):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(1 + (x >> 8) % top)
    return out


def test_all_at_once():
    assert feed_chunks(stream(), [1 << 20]) == expected()


def test_one_byte_at_a_time():
    data = stream()
    assert feed_chunks(data, [1]) == expected()
    # and as memoryview / bytearray pieces
    d = codec.Decoder()
    out = []
    mv = memoryview(bytearray(data))
    for i in range(len(mv)):
        d.receive_data(mv[i : i + 1])
        drain(d, out)
    assert out == expected()


def test_random_chunks_fixed_seed():
    data = stream()
    want = expected()
    for seed, top in ((1, 7), (2, 64), (3, 700), (4, 5000)):
        assert feed_chunks(data, lcg_sizes(seed, 97, top)) == want, (seed, top)


def test_every_split_point_of_two_packets():
    a = codec.encode(codec.Publish("sensors/drone01/altitude", b"100 feet", 1, pid=5))
    b = codec.encode(codec.Subscribe(9, [("a/+", 1)]))
    data = a + b
    want = feed_chunks(a, [len(a)]) + feed_chunks(b, [len(b)])
    assert len(want) == 2
    for cut in range(len(data) + 1):
        d = codec.Decoder()
        out = []
        d.receive_data(data[:cut])
        drain(d, out)
        d.receive_data(data[cut:])
        drain(d, out)
        assert out == want, cut


def test_empty_receive_changes_nothing():
    d = codec.Decoder()
    d.receive_data(b"")
    assert d.next_packet() is None
    d.receive_data(b"\xc0")
    d.receive_data(b"")
    assert d.next_packet() is None
    d.receive_data(b"\x00")
    assert d.next_packet().type == support.PINGREQ


def _via_write_buffer(data, sizes, want_sizes, copy=True):
    """Feed like a driver: mv = write_buffer(); readinto(mv) gives n <= len(mv); commit(n)."""
    d = codec.Decoder(copy=copy)
    out = []
    i = k = 0
    while i < len(data):
        mv = d.write_buffer(want_sizes[k % len(want_sizes)])
        n = min(len(mv), sizes[k % len(sizes)], len(data) - i)
        k += 1
        assert n > 0, "write_buffer gave no room"
        mv[:n] = data[i : i + n]
        d.commit(n)
        i += n
        drain(d, out)
    return out


def test_write_buffer_commit():
    data = stream()
    want = expected()
    assert _via_write_buffer(data, [1 << 20], [256]) == want
    assert _via_write_buffer(data, [1], [1]) == want
    assert _via_write_buffer(data, lcg_sizes(5, 61, 900), [1, 16, 256, 4096]) == want


def test_mixed_receive_data_and_write_buffer():
    data = stream()
    d = codec.Decoder()
    out = []
    i = 0
    for k, n in enumerate(lcg_sizes(6, 400, 300)):
        if i >= len(data):
            break
        piece = data[i : i + n]
        if k % 2:
            d.receive_data(piece)
        else:
            mv = d.write_buffer(len(piece))
            m = min(len(mv), len(piece))
            mv[:m] = piece[:m]
            d.commit(m)
            n = m
        i += n
        drain(d, out)
    assert i >= len(data) and out == expected()


def test_copy_false_gives_memoryview_payloads():
    data = stream()
    pubs = [s for s in expected() if s[0] == support.PUBLISH]
    for sizes in ([1 << 20], [1], lcg_sizes(7, 50, 400)):
        d = codec.Decoder(copy=False)
        got = []
        i = k = 0
        while i < len(data):
            n = sizes[k % len(sizes)]
            k += 1
            d.receive_data(data[i : i + n])
            i += n
            while True:
                p = d.next_packet()
                if p is None:
                    break
                if p.type == support.PUBLISH:
                    assert isinstance(p.payload, memoryview), type(p.payload)
                    got.append(snapshot(p))  # copy out before the next decoder call
        assert got == pubs


def test_copy_true_payloads_survive_later_calls():
    # With the default copy=True nothing decoded may change when more data arrives.
    data = stream()
    d = codec.Decoder()
    kept = []
    for n in lcg_sizes(8, 1000, 40):
        if not data:
            break
        d.receive_data(data[:n])
        data = data[n:]
        while True:
            p = d.next_packet()
            if p is None:
                break
            kept.append(p)
    assert [snapshot(p) for p in kept] == expected()
    for p in kept:
        if p.type == support.PUBLISH:
            assert not isinstance(p.payload, memoryview)

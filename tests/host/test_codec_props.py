# Property tests (CPython only, hypothesis): every packet type round-trips through encode and
# the Decoder under any chunking; arbitrary or mutated bytes only ever raise codec.MQTTError
# and never hang; topic matching and the TopicIndex agree with a reference matcher written here.
import signal

import support
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from midge import codec, topics
from midge.broker_sess import TopicIndex
from support import plain

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# ------------------------------------------------------------------ strategies

_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
text = st.text(_chars, max_size=20)  # any UTF-8 string [1.5.3]
level = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/+#"), max_size=6
)
topic_name = st.lists(level, min_size=1, max_size=5).map("/".join).filter(bool)
filter_level = st.one_of(level, st.just("+"))
topic_filter = st.builds(
    lambda levels, hash_: "/".join(levels + (["#"] if hash_ else [])),
    st.lists(filter_level, min_size=0, max_size=5),
    st.booleans(),
).filter(bool)
pid = st.integers(1, 65535)
qos = st.integers(0, 2)


@st.composite
def connects(draw):
    username = draw(st.none() | text)
    password = draw(st.none() | st.binary(max_size=20)) if username is not None else None
    will = draw(st.booleans())
    return codec.Connect(
        draw(text),
        draw(st.booleans()),
        draw(st.integers(0, 65535)),
        username,
        password,
        draw(topic_name) if will else None,
        draw(st.binary(max_size=30)) if will else None,
        draw(qos) if will else 0,
        draw(st.booleans()) if will else False,
    )


@st.composite
def publishes(draw):
    q = draw(qos)
    return codec.Publish(
        draw(topic_name),
        draw(st.binary(max_size=400)),
        q,
        draw(st.booleans()),
        draw(st.booleans()) if q else False,
        draw(pid) if q else 0,
    )


ack_types = st.sampled_from(
    [support.PUBACK, support.PUBREC, support.PUBREL, support.PUBCOMP, support.UNSUBACK]
)
packets = st.one_of(
    connects(),
    st.builds(lambda rc, sp: codec.Connack(sp and rc == 0, rc), st.integers(0, 5), st.booleans()),
    publishes(),
    st.builds(codec.Ack, ack_types, pid),
    st.builds(codec.Subscribe, pid, st.lists(st.tuples(topic_filter, qos), min_size=1, max_size=4)),
    st.builds(
        codec.Suback, pid, st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=4)
    ),
    st.builds(codec.Unsubscribe, pid, st.lists(topic_filter, min_size=1, max_size=4)),
    st.sampled_from([support.PINGREQ, support.PINGRESP, support.DISCONNECT]).map(codec.Simple),
)

FIELDS = {
    support.CONNECT: (
        "client_id clean_session keepalive username password will_topic will_payload "
        "will_qos will_retain proto_level"
    ).split(),
    support.CONNACK: ["session_present", "return_code"],
    support.PUBLISH: ["topic", "payload", "qos", "retain", "dup", "pid"],
    support.SUBSCRIBE: ["pid", "topics"],
    support.SUBACK: ["pid", "codes"],
    support.UNSUBSCRIBE: ["pid", "filters"],
}


def snap(p):
    if p.type in FIELDS:
        fields = FIELDS[p.type]
    else:  # the four publish acks and UNSUBACK carry a packet id; the rest nothing
        fields = ["pid"] if p.type < support.PINGREQ else []
    return (p.type,) + tuple(plain(getattr(p, f)) for f in fields)


def chunked(data, cuts):
    """Split data at the (sorted, de-duplicated) cut positions."""
    pos = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for c in pos + [len(data)]:
        out.append(data[last:c])
        last = c
    return out


def _hung(signum, frame):
    raise AssertionError("decoder did not return within 5 s")


def feed(d, chunks):
    """Feed chunks, collecting packets; bounded: every packet consumes at least 2 bytes, and
    an alarm turns a decoder that never returns into a failure instead of a hang."""
    old = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(5)
    try:
        return _feed(d, chunks)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _feed(d, chunks):
    out = []
    budget = sum(len(c) for c in chunks) // 2 + 2
    for c in chunks:
        d.receive_data(c)
        while True:
            p = d.next_packet()
            if p is None:
                break
            out.append(p)
            budget -= 1
            assert budget >= 0, "decoder returned more packets than the bytes allow"
    return out


# ------------------------------------------------------------------ round trip


@SETTINGS
@given(packets)
def test_round_trip_every_packet_type(p):
    wire = codec.encode(p)
    got = feed(codec.Decoder(), [wire])
    assert len(got) == 1 and snap(got[0]) == snap(p)
    assert codec.encode(got[0]) == wire


@SETTINGS
@given(publishes())
def test_encode_publish_matches_encode(p):
    buf = bytearray(codec.publish_size(len(p.topic.encode()), len(p.payload), p.qos))
    n = codec.encode_publish(buf, p.topic, p.payload, p.qos, p.retain, p.dup, p.pid)
    assert n == len(buf) and bytes(buf) == codec.encode(p)


@SETTINGS
@given(st.lists(packets, min_size=1, max_size=8), st.lists(st.integers(0, 10_000), max_size=20))
def test_stream_any_chunking(pkts, cuts):
    wire = b"".join(codec.encode(p) for p in pkts)
    for copy in (True, False):
        d = codec.Decoder(copy=copy)
        got = []
        for c in chunked(wire, cuts):
            d.receive_data(c)
            while True:
                p = d.next_packet()
                if p is None:
                    break
                got.append(snap(p))  # before the next call: copy=False views are short-lived
        assert got == [snap(p) for p in pkts]


# ------------------------------------------------------------------ hostile input


@SETTINGS
@given(
    st.binary(max_size=600),
    st.lists(st.integers(0, 600), max_size=12),
    st.one_of(st.none(), st.integers(2, 700)),
    st.booleans(),
)
def test_arbitrary_bytes_only_raise_mqtterror(data, cuts, max_packet, copy):
    d = codec.Decoder(copy=copy) if max_packet is None else codec.Decoder(max_packet, copy)
    try:
        feed(d, chunked(data, cuts))
    except codec.MQTTError as e:
        assert isinstance(e.reason, str) and e.reason
        assert e.code in (None, 1, 2, 3, 4, 5)


@SETTINGS
@given(
    st.lists(packets, min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_mutated_packets_only_raise_mqtterror(pkts, edits, cuts):
    # Valid packets with a few bytes overwritten reach the deep parsing paths.
    wire = bytearray(b"".join(codec.encode(p) for p in pkts))
    for pos, val in edits:
        wire[pos % len(wire)] = val
    try:
        feed(codec.Decoder(), chunked(bytes(wire), cuts))
    except codec.MQTTError as e:
        assert e.reason


@SETTINGS
@given(st.lists(packets, min_size=1, max_size=4), st.integers(0, 10_000))
def test_truncated_stream_never_yields_a_partial_packet(pkts, cut):
    wire = b"".join(codec.encode(p) for p in pkts)
    cut %= len(wire)
    got = feed(codec.Decoder(), [wire[:cut]])
    whole = 0
    size = 0
    for p in pkts:
        size += len(codec.encode(p))
        if size <= cut:
            whole += 1
    assert [snap(p) for p in got] == [snap(p) for p in pkts[:whole]]


# ------------------------------------------------------------------ topics vs a reference


def ref_matches(filt, name):
    """Reference matcher from the text of 4.7: recursive over levels."""
    if name.startswith("$") and filt[0] in "+#":
        return False
    fl, nl = filt.split("/"), name.split("/")

    def rec(i, j):
        if i == len(fl):
            return j == len(nl)
        if fl[i] == "#":
            return True  # this level and all below, including the parent itself
        if j == len(nl):
            return False
        return (fl[i] == "+" or fl[i] == nl[j]) and rec(i + 1, j + 1)

    return rec(0, 0)


small_level = st.sampled_from(["a", "b", "", "$s", "x y"])
small_name = st.lists(small_level, min_size=1, max_size=4).map("/".join).filter(bool)
small_filter = st.builds(
    lambda levels, hash_: "/".join(levels + (["#"] if hash_ else [])),
    st.lists(st.one_of(small_level, st.just("+")), max_size=4),
    st.booleans(),
).filter(bool)


@st.composite
def name_and_related_filter(draw):
    """A name and a filter derived from it (so that matches are frequent)."""
    levels = draw(st.lists(small_level, min_size=1, max_size=5))
    name = "/".join(levels)
    f = [lv if not draw(st.booleans()) else "+" for lv in levels]
    cut = draw(st.integers(0, len(f)))
    if draw(st.booleans()):
        f = f[:cut] + ["#"]
    return draw(st.sampled_from(["/".join(f), draw(small_filter)])), name


@SETTINGS
@given(st.one_of(name_and_related_filter(), st.tuples(small_filter, small_name)))
def test_matches_agrees_with_reference(fn):
    f, n = fn
    if not n:
        return
    topics.check_filter(f)
    topics.check_topic(n)
    assert topics.matches(f, n) == ref_matches(f, n), (f, n)


@SETTINGS
@given(
    st.lists(st.tuples(small_filter, st.integers(0, 5), qos), max_size=25),
    st.lists(st.tuples(small_filter, st.integers(0, 5)), max_size=10),
    st.lists(small_name, min_size=1, max_size=10),
)
def test_index_agrees_with_reference(subs, removals, names):
    ix = TopicIndex()
    model = {}  # (filter, key) -> qos
    for f, k, q in subs:
        ix.add(f, k, q)
        model[(f, k)] = q
    for f, k in removals:
        assert ix.remove(f, k) == ((f, k) in model)
        model.pop((f, k), None)
    assert len(ix) == len(model)
    for n in names:
        want = {}
        for (f, k), q in model.items():
            if ref_matches(f, n):
                want[k] = max(want.get(k, -1), q)
        assert ix.match(n) == want, n

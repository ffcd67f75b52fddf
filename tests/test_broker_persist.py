# Broker persistence (journal file) on both runtimes: restore, held acks, corrupt file.
import support
from brokerpeer import Peer, connack
from midge import broker_core, persist
from midge import codec as C
from support import tmpdir


def _broker(path, logs):
    b = broker_core.Broker()
    persist.Store(path, b, lambda lv, m: logs.append(m)).restore(0)
    return b


def test_restart_restores_retained_sessions_and_queues():
    path = tmpdir() + "/db"
    logs = []
    b = _broker(path, logs)
    s = Peer(b, "keep", clean_session=False)
    s.sub("p/#", qos=1)
    s.send(C.Ack(support.DISCONNECT))
    b.closed(s.c, 0)
    p = Peer(b, "pub", clean_session=False)
    connack(p)
    p.send(C.Publish("p/r", b"kept", 1, retain=True, pid=1))
    p.send(C.Publish("p/q", b"queued", 2, pid=2))
    assert p.recv() == []  # acks wait for the journal
    b.store.sync()
    assert p.recv() == [C.Ack(support.PUBACK, 1), C.Ack(support.PUBREC, 2)]
    b.store.close(0)
    b2 = _broker(path, logs)
    assert b2.retained["p/r"].payload == b"kept"
    s2 = Peer(b2, "keep", clean_session=False)
    assert connack(s2).session_present
    got = s2.pubs()
    assert [(g.topic, g.payload) for g in got] == [("p/r", b"kept"), ("p/q", b"queued")]
    late = Peer(b2, "late")
    assert [g.payload for g in late.sub("p/+")[1:]] == [b"kept"]
    # the inbound QoS 2 id is remembered too: a resend after restart is not routed twice
    p2 = Peer(b2, "pub", clean_session=False)
    connack(p2)
    p2.send(C.Publish("p/q", b"queued", 2, dup=True, pid=2))
    assert p2.recv() == [C.Ack(support.PUBREC, 2)] and s2.pubs() == []
    b2.store.close(0)


def test_corrupt_file_moved_aside_and_reported():
    d = tmpdir()
    path = d + "/db"
    with open(path, "wb") as f:
        f.write(b"this is not a midge file")
    logs = []
    b = _broker(path, logs)
    assert b.retained == {} and any("moved to" in m for m in logs)
    with open(path + ".corrupt", "rb") as f:
        assert f.read() == b"this is not a midge file"
    b.store.close(0)


def test_truncated_tail_keeps_earlier_records():
    path = tmpdir() + "/db"
    logs = []
    b = _broker(path, logs)
    p = Peer(b, "p")
    p.send(C.Publish("t/1", b"one", 0, retain=True))
    b.store.sync()
    p.send(C.Publish("t/2", b"two", 0, retain=True))
    b.store.close(0)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-2])  # killed in the middle of the last record
    b2 = _broker(path, logs)
    assert list(b2.retained) == ["t/1"]
    b2.store.close(0)


def test_inflight_order_survives_a_restart():
    from test_broker_qos import _inflight_across_the_pid_wrap, _resumed_in_order

    path = tmpdir() + "/db"
    logs = []
    b = _broker(path, logs)
    _inflight_across_the_pid_wrap(b)
    b.store.close(0)
    b2 = _broker(path, logs)
    _resumed_in_order(b2)
    b2.store.close(0)

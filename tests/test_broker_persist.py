# Broker persistence (journal file) on both runtimes: restore, held acks, corrupt file.
import sys

import support
from brokerpeer import Peer, connack, inflight_across_the_pid_wrap, resumed_in_order
from midge import broker_core, persist
from midge import codec as C
from support import tmpdir


def _broker(path, logs):
    b = broker_core.Broker()
    persist.Store(path, b, lambda lv, m: logs.append(m)).restore(0)
    return b


def _size(path):
    import os

    return os.stat(path)[6]


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
    assert "midge.persist_load" not in sys.modules  # start-up code: unloaded after restore
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


def _tamper(path, change):
    """Rewrite the journal at path as change(its bytes) returns them; returns those."""
    with open(path, "rb") as f:
        data = change(bytearray(f.read()))
    with open(path, "wb") as f:
        f.write(data)
    return data


def test_truncated_tail_keeps_earlier_records():
    for cut in (2, 12, 20):  # killed inside the last record: its payload, topic, header
        path = tmpdir() + "/db"
        logs = []
        b = _broker(path, logs)
        p = Peer(b, "p")
        p.send(C.Publish("t/1", b"one", 0, retain=True))
        b.store.step(0)
        last = _size(path)  # where the last record starts
        p.send(C.Publish("t/2", b"two", 0, retain=True))
        b.store.close(0)
        _tamper(path, lambda d, cut=cut: d[:-cut])
        b2 = _broker(path, logs)
        assert list(b2.retained) == ["t/1"]
        assert any("(byte %d) was cut short" % last in m for m in logs), logs
        assert not any("moved to" in m for m in logs), logs
        b2.store.close(0)


def test_inflight_order_survives_a_restart():
    path = tmpdir() + "/db"
    logs = []
    b = _broker(path, logs)
    inflight_across_the_pid_wrap(b)
    b.store.close(0)
    b2 = _broker(path, logs)
    resumed_in_order(b2)
    b2.store.close(0)


def _queue_offline(n):
    """A journal (compaction put off) after n QoS 1 messages were queued one at a time for
    an offline persistent subscriber: (broker, path, bytes the queueing appended)."""
    path = tmpdir() + "/db"
    b = _broker(path, [])
    b.store.live = 1 << 24  # never compacted: every byte appended stays in the file
    s = Peer(b, "off", clean_session=False)
    s.sub("q/#", qos=1)
    b.closed(s.c, 0)
    p = Peer(b, "pub")
    connack(p)
    b.store.step(0)
    start = _size(path)
    for i in range(n):
        p.send(C.Publish("q/t", b"msg-%04d" % i, 1, pid=1 + i % 60000))
        b.store.sync()  # as the driver does after each read
        assert p.recv() == [C.Ack(support.PUBACK, 1 + i % 60000)]
    b.store.step(0)
    return b, path, _size(path) - start


def test_journal_grows_linearly_with_the_offline_queue():
    # (a queued message is ~300 B of objects: a 128K MicroPython heap with the tests loaded
    # has room for about a hundred)
    ns = (16, 32, 64) if support.MICROPYTHON else (100, 200, 400)
    sizes = []
    for n in ns:
        b, path, size = _queue_offline(n)
        b.store.close(0)
        b = None
        sizes.append(size)
    # one small record per queued message: a writer that appended the whole queue on each
    # change would write ~n*n/2 records (ratios near 4)
    assert 1.8 < sizes[1] / sizes[0] < 2.2, sizes
    assert 1.8 < sizes[2] / sizes[1] < 2.2, sizes
    assert sizes[2] < ns[2] * 64, sizes  # a few dozen bytes per message of 8


def test_queue_and_window_restored_exactly_after_acks_and_a_crash():
    b, path, _ = _queue_offline(40)
    s = Peer(b, "off", clean_session=False)
    assert connack(s).session_present
    b.store.sync()
    got = s.pubs()  # the first 20 (the in-flight window); 20 still queued
    assert [g.payload for g in got] == [b"msg-%04d" % i for i in range(20)]
    for k, g in enumerate(got[:7]):  # acknowledged one at a time: as many move into the window
        s.send(C.Ack(support.PUBACK, g.pid))
        b.store.sync()
        if k == 4:
            b.store.compact()  # the journal rewritten from the live state in between
    more = s.pubs()
    assert [g.payload for g in more] == [b"msg-%04d" % i for i in range(20, 27)]
    b.store.step(0)  # on disk; then the broker dies without closing anything (kill -9)
    b = s = got = more = None  # (a 128K heap holds one broker's worth of queue, not two)
    b2 = _broker(path, [])
    sess = b2.sessions["off"]
    assert [e[0].payload for e in sess.inflight.values()] == [b"msg-%04d" % i for i in range(7, 27)]
    assert [m.payload for m, f in sess.queue] == [b"msg-%04d" % i for i in range(27, 40)]
    assert sess.qbytes == 13 * 8
    s2 = Peer(b2, "off", clean_session=False)
    assert connack(s2).session_present
    got = s2.pubs()
    assert [(g.payload, g.dup) for g in got] == [(b"msg-%04d" % i, True) for i in range(7, 27)]
    b2.store.close(0)


def test_qos2_flows_replayed_from_single_records():
    path = tmpdir() + "/db"
    b = _broker(path, [])
    b.store.sync()
    feed = b.feed

    def feed_and_sync(c, data, now):  # as the drivers do: a sync after every read
        feed(c, data, now)
        b.store.sync()

    b.feed = feed_and_sync
    inflight_across_the_pid_wrap(b)
    p = Peer(b, "p2", clean_session=False)
    connack(p)
    p.send(C.Publish("x", b"twice?", 2, pid=9))  # inbound QoS 2, not yet released
    p.send(C.Publish("x", b"done", 2, pid=10))
    p.send(C.Ack(support.PUBREL, 10))
    b.store.step(0)
    b2 = _broker(path, [])
    assert b2.sessions["p2"].rx2 == {9}
    resumed_in_order(b2)
    b2.store.close(0)


def test_a_journal_far_bigger_than_the_heap_restores():
    """~90 KB of superseded records (retained topics rewritten, a queue filled and drained)
    restore through one small buffer: a 128K MicroPython heap never holds the file."""
    path = tmpdir() + "/db"
    b = _broker(path, [])
    b.store.live = 1 << 24
    s = Peer(b, "big", clean_session=False)
    s.sub("b/#", qos=1)
    p = Peer(b, "pub")
    blob = b"x" * 400
    for k in range(20):
        for t in range(10):
            p.send(C.Publish("r/%d" % t, blob + b"%d" % k, 0, retain=True))
            b.store.sync()
        p.send(C.Publish("b/t", b"m%d" % k, 1, pid=1))
        b.store.sync()
        for g in s.pubs():
            s.send(C.Ack(support.PUBACK, g.pid))
            b.store.sync()
    b.closed(s.c, 0)
    last = b"L" * 700  # longer than the 512-byte buffer: read into one block of its size
    p.send(C.Publish("b/t", last, 1, pid=1))
    b.store.close(0)
    size = _size(path)
    assert size > 85000, size
    b = s = p = None
    for _ in range(2):  # the journal, then the compacted file it was rewritten into
        b2 = _broker(path, [])
        assert sorted(b2.retained) == ["r/%d" % t for t in range(10)]
        assert b2.retained["r/3"].payload == blob + b"19"
        sess = b2.sessions["big"]
        assert sess.subs == {"b/#": 1} and not sess.inflight
        assert [m.payload for m, f in sess.queue] == [last]
        b2.store.close(0)
        b2 = sess = None
        assert _size(path) < 9000  # compacted


def test_damaged_record_in_the_middle_keeps_what_came_before():
    path = tmpdir() + "/db"
    logs = []
    b = _broker(path, logs)
    p = Peer(b, "p")
    for t in ("a", "b", "c"):
        p.send(C.Publish("t/" + t, b"value-" + t.encode(), 0, retain=True))
        b.store.sync()
    b.store.close(0)

    def flip(d):
        d[d.find(b"value-b")] ^= 1
        return d

    data = _tamper(path, flip)
    b2 = _broker(path, logs)
    assert sorted(b2.retained) == ["t/a"]
    assert any("damaged record at byte" in m and "moved to" in m for m in logs), logs
    with open(path + ".corrupt", "rb") as f:
        assert f.read() == data
    b2.store.close(0)


def test_acks_in_publish_order_when_only_some_wait_for_the_journal():
    b = _broker(tmpdir() + "/db", [])
    p = Peer(b, "p")
    connack(p)
    p.send(C.Publish("r", b"kept", 1, retain=True, pid=1))  # journaled: its PUBACK waits
    p.send(C.Publish("x", b"live", 1, pid=2))  # nothing kept: no reason to wait
    b.store.sync()
    # MQTT-4.6.0-2: PUBACKs go in the order the PUBLISH packets came
    assert p.recv() == [C.Ack(support.PUBACK, 1), C.Ack(support.PUBACK, 2)]
    b.store.close(0)


class _FullDisk:
    """The journal's file as a full disk sees it: writes fail (ENOSPC) once `room` bytes are
    used, after writing what fits, as a real short write leaves a partial record."""

    def __init__(self, f, room):
        self.f = f
        self.room = room

    def write(self, data):
        n = min(len(data), self.room)
        self.f.write(bytes(data[:n]))
        self.room -= n
        if n < len(data):
            raise OSError(28, "No space left on device")
        return n

    def flush(self):  # what a buffered write left for later fails here
        if self.room <= 0:
            raise OSError(28, "No space left on device")
        self.f.flush()

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _while_full(b, p, logs):
    p.send(C.Publish("r/2", b"two", 1, retain=True, pid=2))
    b.store.sync()  # the client goes on; the failure is said once, its PUBACK waits
    assert p.recv() == [] and len([m for m in logs if "cannot write" in m]) == 1, logs
    p.send(C.Publish("r/1", b"uno", 1, retain=True, pid=4))
    b.store.sync()  # the rewrite fails too: still nothing acknowledged, nothing said again
    assert p.recv() == [] and len([m for m in logs if "cannot write" in m]) == 1, logs


def _connected():
    path = tmpdir() + "/db"
    logs = []
    b = _broker(path, logs)
    p = Peer(b, "p")
    connack(p)
    return path, logs, b, p


def test_disk_full_mid_record_then_space_again_loses_nothing_acknowledged():
    path, logs, b, p = _connected()
    p.send(C.Publish("r/1", b"one", 1, retain=True, pid=1))
    b.store.sync()
    assert p.recv() == [C.Ack(support.PUBACK, 1)]
    b.store.f = _FullDisk(b.store.f, 5)  # the next record is cut after 5 bytes,
    persist.open = lambda name, mode: _FullDisk(open(name, mode), 0)  # a rewrite gets nothing
    try:
        _while_full(b, p, logs)
    finally:
        del persist.open
    p.send(C.Publish("r/3", b"three", 1, retain=True, pid=3))
    b.store.sync()  # space again: the whole state is rewritten, not appended after the cut
    assert p.recv() == [C.Ack(support.PUBACK, i) for i in (2, 4, 3)]
    assert any("written again" in m for m in logs), logs
    b.store.close(0)
    b2 = _broker(path, logs)
    assert sorted((t, m.payload) for t, m in b2.retained.items()) == [
        ("r/1", b"uno"),
        ("r/2", b"two"),
        ("r/3", b"three"),
    ]
    assert not any("moved to" in m or "cut short" in m for m in logs), logs
    b2.store.close(0)


def test_stopping_while_the_disk_is_full_says_so_once():
    _, logs, b, p = _connected()
    b.store.f = _FullDisk(b.store.f, 0)
    persist.open = lambda name, mode: _FullDisk(open(name, mode), 0)  # a rewrite fails too
    try:
        p.send(C.Publish("r/1", b"one", 1, retain=True, pid=1))
        b.store.sync()
        assert p.recv() == []
        b.store.close(0)  # Ctrl-C now: no exception out of the journal, the failure said once
    finally:
        del persist.open
    assert len([m for m in logs if "cannot write" in m]) == 1, logs

"""midge's broker on MicroPython in a 128K heap, lib loaded as .mpy as on a board, started on
a journal several times bigger than its free heap: it restores (the file is streamed, never
held whole) and hands a persistent session its queue back in order."""

import os

import pytest
import support
from brokerpeer import Peer, connack
from brokerproc import Broker, Raw, available, compile_lib
from midge import broker_core, persist
from midge import codec as C

pytestmark = pytest.mark.skipif(not available("micropython"), reason="no micropython")

N = 100  # messages queued for the offline session


def _journal(path):
    """Written by the broker core on CPython, as a board would have written it: retained
    topics rewritten many times over (superseded records), and a queue built one message at
    a time while the session's subscriber was away."""
    b = broker_core.Broker()
    persist.Store(path, b, lambda lv, m: None).restore(0)
    b.store.live = 1 << 24  # never compacted: the journal keeps every record
    s = Peer(b, "keeper", clean_session=False)
    s.sub("k/#", qos=1)
    b.closed(s.c, 0)
    p = Peer(b, "pub")
    connack(p)
    for k in range(15):
        for t in range(8):
            p.send(C.Publish("r/%d" % t, b"%02d" % k + b"r" * 600, 0, retain=True))
            b.store.sync()
    for i in range(N):
        p.send(C.Publish("k/t", b"queued-%03d" % i, 1, pid=1 + i))
        b.store.sync()
    b.store.close(0)


def test_128k_broker_restores_a_journal_bigger_than_its_heap(tmp_path):
    db = str(tmp_path / "midge.db")
    _journal(db)
    size = os.stat(db).st_size
    assert size > 75000, size  # the broker alone leaves ~55 KB of a 128K heap free
    conf = tmp_path / "c.conf"
    conf.write_text("sys_interval 0\npersistence true\npersistence_file %s\n" % db)
    b = Broker(
        "micropython", str(conf), args=["-v"], heap="128K", lib=compile_lib(str(tmp_path / "mpy"))
    )
    try:
        r = Raw(b.port)
        assert r.connect("keeper", clean_session=False).session_present
        got = []
        while len(got) < N:
            m = r.recv()
            assert m is not None and m.type == support.PUBLISH, m
            got.append(m.payload)
            r.send(C.Ack(support.PUBACK, m.pid))
        assert got == [b"queued-%03d" % i for i in range(N)]
        r.send(C.DISCONNECT_PKT)
        assert os.stat(db).st_size < size // 4  # compacted once restored
    finally:
        out = b.kill()
    assert "restored 8 retained messages and 1 sessions" in out, out
    assert "MemoryError" not in out and "out of memory" not in out, out

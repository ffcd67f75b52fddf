"""midge's broker on MicroPython in a 128K heap, lib loaded as .mpy as on a board: many
clients connected at once, all exchanging QoS 1 messages in a ring.

The issue's memory target (>= 24 clients in 128K) is a figure, so it lives in `make bench`
(host_tools/bench_broker.py runs this ring with 24 clients and reports it); 24 is within a
few hundred bytes of the limit, where heap fragmentation decides, so this test keeps a
margin with 16 clients and fails on any out-of-memory line. $SYS is off here."""

import time

import pytest
import support
from brokerproc import Broker, Raw, available, compile_lib

N = 16
ROUNDS = 10

pytestmark = pytest.mark.skipif(not available("micropython"), reason="no micropython")


def test_16_clients_exchange_qos1_in_128k(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("sys_interval 0\n")
    b = Broker("micropython", str(conf), heap="128K", lib=compile_lib(str(tmp_path / "mpy")))
    try:
        rs = []
        for i in range(N):
            r = Raw(b.port)
            assert r.connect("ring%02d" % i, keepalive=60).return_code == 0, i
            rs.append(r)
        C = r.codec
        for i, r in enumerate(rs):
            r.send(C.Subscribe(1, [("ring/%d" % i, 1)]))
            assert r.recv() == C.Suback(1, [1])
        t0 = time.monotonic()
        for k in range(1, ROUNDS + 1):
            for i, r in enumerate(rs):
                r.send(C.Publish("ring/%d" % ((i + 1) % N), b"%d from %d" % (k, i), 1, pid=k))
            for i, r in enumerate(rs):
                got = {}
                while len(got) < 2:
                    p = r.recv()
                    assert p is not None, "client %d closed in round %d" % (i, k)
                    if p.type == support.PUBACK:
                        assert p.pid == k
                        got["ack"] = 1
                    else:
                        assert p.type == support.PUBLISH and p.qos == 1
                        assert p.payload == b"%d from %d" % (k, (i - 1) % N)
                        r.send(C.Ack(support.PUBACK, p.pid))
                        got["msg"] = 1
        rate = ROUNDS * N / (time.monotonic() - t0)
        assert b.proc.poll() is None
        print("%d clients in 128K: %.0f QoS 1 msgs/s" % (N, rate))
        for r in rs:
            r.send(C.DISCONNECT_PKT)
            r.close()
    except (AssertionError, OSError) as e:
        raise AssertionError("%s\nbroker output:\n%s" % (e, b.kill()[-2000:])) from None
    finally:
        out = b.kill()
    assert "MemoryError" not in out and "out of memory" not in out, out

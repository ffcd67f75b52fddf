"""The AsyncClient when the broker stalls (SIGSTOP) under a flood of 16 KB publishes, on
MicroPython and CPython: every publish() returns within a bound, the client detects the
dead link or carries on, publishes again once the broker is back, and exits by itself."""

import os
import signal
import subprocess
import sys
import time

import harness
import pytest
from brokerproc import MICROPYTHON, available

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(HERE, "..", "..", "lib")
RUNTIMES = [r for r in ("cpython", "micropython") if available(r)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_publishes_return_while_the_broker_is_stopped(runtime):
    m = harness.Mosquitto().start()
    script = os.path.join(HERE, "stall_client_run.py")
    if runtime == "micropython":
        cmd = [MICROPYTHON, "-X", "heapsize=256K", script, str(m.port)]
        env = dict(os.environ, MICROPYPATH=LIB + ":.frozen")  # asyncio is frozen
    else:
        cmd = [sys.executable, "-u", script, str(m.port)]
        env = dict(os.environ, PYTHONPATH=LIB)
    try:
        with harness.process_group(cmd, env=env, text=True) as p:
            assert p.stdout.readline() == "ready\n"
            t0 = time.monotonic()
            time.sleep(0.5)
            os.kill(m.proc.pid, signal.SIGSTOP)
            stopped = time.monotonic() - t0
            time.sleep(2.5)
            os.kill(m.proc.pid, signal.SIGCONT)
            resumed = time.monotonic() - t0
            try:
                out, _ = p.communicate(timeout=15)  # the script runs 6 s, then ends
            except subprocess.TimeoutExpired:
                raise AssertionError("the client did not exit by itself") from None
    finally:
        os.kill(m.proc.pid, signal.SIGCONT)
        m.stop()
    lines = out.split("\n")
    assert p.returncode == 0 and lines[-2].startswith("done "), out[-2000:]
    published, longest, reconnects, connected = map(int, lines[-2].split()[1:])
    progress = [tuple(map(int, ln.split()[1:])) for ln in lines if ln.startswith("p ")]
    before = max([n for ms, n in progress if ms <= stopped * 1000] or [0])
    after = [n for ms, n in progress if ms >= (resumed + 1.5) * 1000]
    # keepalive 1: a drain or an answer overdue 1.5 s is a dead link, torn down at once
    assert longest < 4000, (longest, reconnects, out[-1000:])
    assert before > 0 and after and after[-1] > after[0], progress
    assert published > before and connected, (published, before, reconnects, connected)

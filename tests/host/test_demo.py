"""`make demo` end to end: the broker on MicroPython, two virtual drone boards, the
subscriber. Readings from both drones arrive within seconds, and stopping the demo (by
--duration or by Ctrl-C) leaves no process behind."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

from harness import process_group, read_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")


def processes_under(path):
    """PIDs whose command line or working directory mentions `path`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().decode("utf-8", "replace")
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        if path in cmd or cwd.startswith(path):
            found.append(int(pid))
    return found


@contextlib.contextmanager
def demo(tmp_path, *args):
    """The demo in its own session; on the way out (a failed assert, a timeout) its process
    group and whatever it started in tmp_path (broker, boards: own sessions) are killed."""
    cmd = [sys.executable, "-m", "host_tools.demo", "--workdir", str(tmp_path)]
    cmd += ["--interval-ms", "300"] + list(args)
    try:
        with process_group(cmd, cwd=ROOT, stderr=subprocess.STDOUT) as p:
            yield p
    finally:
        for pid in processes_under(str(tmp_path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def check_broker_is_micropython(out):
    m = re.search(r"midge demo: broker on MicroPython at 127\.0\.0\.1:\d+ \(pid (\d+)\)", out)
    assert m, out
    return int(m.group(1))


def test_demo_bounded_run_shows_readings_and_cleans_up(tmp_path):
    t0 = time.monotonic()
    with demo(tmp_path, "--duration", "6") as p:
        out = read_until(p, lambda t: False, 30)  # to the end of its output
        assert p.wait(5) == 0, out
    assert time.monotonic() - t0 < 30
    check_broker_is_micropython(out)
    lines = out.splitlines()
    assert any("broker" in ln and "listening on 127.0.0.1:" in ln for ln in lines), out
    assert any("sensors/drone01/status online" in ln for ln in lines), out
    alt = [ln for ln in lines if "sensors/drone01/altitude " in ln]
    temp = [ln for ln in lines if "sensors/drone40/temperature " in ln]
    assert len(alt) >= 3 and len(temp) >= 3, out
    assert 0.0 <= float(alt[-1].split()[-1]) <= 110.0
    assert 20.0 < float(temp[-1].split()[-1]) < 30.0  # the virtual Pico's ADC die sensor
    assert not [ln for ln in lines if "sensors/drone01/temperature" in ln]  # kinds honoured
    assert "Traceback" not in out
    assert "stopped (drone01: " in lines[-1]
    assert processes_under(str(tmp_path)) == []


def test_demo_ctrl_c_stops_everything(tmp_path):
    with demo(tmp_path) as p:
        seen = read_until(p, lambda t: "drone01/altitude " in t and "drone40/temperature " in t, 30)
        assert "drone40/temperature " in seen and "drone01/altitude " in seen, seen
        pid = check_broker_is_micropython(seen)
        # the process behind that line runs midge.broker on the MicroPython interpreter
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().decode().split("\0")
        assert MICROPYTHON in argv and argv[argv.index(MICROPYTHON) + 1 :][:2] == [
            "-m",
            "midge.broker",
        ], argv
        assert pid in processes_under(str(tmp_path))  # broker and boards are running
        p.send_signal(signal.SIGINT)
        out = read_until(p, lambda t: False, 20)
        assert p.wait(5) == 0, seen + out
    assert "broker and boards stopped" in out
    assert processes_under(str(tmp_path)) == []

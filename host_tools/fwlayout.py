"""What goes on a board, read from firmware/manifest.py (the one list of board files).

The manifest names what a custom firmware build freezes; a board running stock MicroPython
gets the same modules as files under /lib (on its sys.path), plus boot.py and main.py at the
root. evaluate() runs the manifest with stand-ins for MicroPython's manifest functions.
"""

import os
import runpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "firmware", "manifest.py")
ROOT_FILES = ("boot.py", "main.py")


def evaluate(path=MANIFEST):
    """({module path as frozen, e.g. 'midge/codec.py': source file}, [port-level includes])."""
    frozen, external = {}, []
    here = [os.path.dirname(os.path.abspath(path))]

    def resolve(p, base="."):
        return os.path.normpath(os.path.join(here[-1], base, p))

    def package(name, files=None, base_path=".", opt=None):
        top, base = resolve(name, base_path), resolve(".", base_path)
        if not os.path.isdir(top):
            raise FileNotFoundError("manifest package %r: no folder %s" % (name, top))
        for d, _, fs in os.walk(top):
            for f in sorted(fs):
                if f.endswith(".py") and (files is None or f in files):
                    full = os.path.join(d, f)
                    frozen[os.path.relpath(full, base).replace(os.sep, "/")] = full

    def module(name, base_path=".", opt=None):
        full = resolve(name, base_path)
        if not os.path.isfile(full):
            raise FileNotFoundError("manifest module %r: no file %s" % (name, full))
        frozen[name] = full

    def include(p, **kw):
        if p.startswith("$("):  # the port's own manifest: only exists in a MicroPython tree
            external.append(p)
            return
        full = resolve(p)
        here.append(os.path.dirname(full))
        try:
            runpy.run_path(full, init_globals=names)
        finally:
            here.pop()

    def require(name, **kw):
        external.append("require " + name)

    names = {"package": package, "module": module, "include": include, "require": require}
    runpy.run_path(path, init_globals=names)
    return frozen, external


def board_files():
    """[(host source file, path on the board)] for a board running stock MicroPython."""
    frozen, _ = evaluate()
    files = [(os.path.join(ROOT, "firmware", f), f) for f in ROOT_FILES]
    return files + [(src, "lib/" + name) for name, src in sorted(frozen.items())]

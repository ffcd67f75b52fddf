# The virtual board's `os`: the unix port's built-in os (MicroPython's documented way to extend
# a built-in module) with rename() fixed. VfsPosix mounted with a root folder builds both paths
# of a rename in one shared buffer, so absolute paths fail with ENOENT; relative ones work.
import sys

_path = sys.path
sys.path = ()
try:
    from os import *  # noqa: F403
    from os import chdir, getcwd
    from os import rename as _rename
finally:
    sys.path = _path
    del _path


def _from_root(path, cwd):
    return (path if path[:1] == "/" else cwd.rstrip("/") + "/" + path).lstrip("/")


def rename(old, new):
    if old[:1] != "/" and new[:1] != "/":
        return _rename(old, new)
    cwd = getcwd()
    chdir("/")
    try:
        _rename(_from_root(old, cwd), _from_root(new, cwd))
    finally:
        chdir(cwd)

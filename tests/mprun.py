# The MicroPython side of the suite: runs the test_* functions of the given test modules
# (all tests/test_*.py when none are given), prints failures and one closing line
# "micropython: N passed, M failed, K skipped".
# Usage (repo root): MICROPYPATH=lib:tests:.frozen micropython -X heapsize=128K tests/mprun.py [-v] [-k SUBSTR] [MODULE ...]
# tests/run_micropython.py runs one interpreter per module, as a board would run one file at a time.
import gc
import os
import sys

import support


def _print_exc(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)  # type: ignore[attr-defined]
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)


def run(mods, pattern=None, verbose=False):
    passed = failed = skipped = 0
    failures = []
    for name in mods:
        gc.collect()
        try:
            mod = __import__(name)
        except Exception as e:
            print("ERROR importing", name)
            _print_exc(e)
            failed += 1
            failures.append(name)
            continue
        for t in sorted(k for k in dir(mod) if k.startswith("test_")):
            full = name + "::" + t
            fn = getattr(mod, t)
            if (pattern and pattern not in full) or not callable(fn):
                continue
            gc.collect()
            try:
                fn()
            except support.Skip as e:
                skipped += 1
                if verbose:
                    print("SKIP", full, e)
                continue
            except Exception as e:
                failed += 1
                failures.append(full)
                print("FAIL", full)
                _print_exc(e)
                continue
            passed += 1
            if verbose:
                print("ok  ", full)
        del mod
        sys.modules.pop(name, None)
    for f in failures:
        print("failed:", f)
    print("micropython: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return failed


def main():
    args = sys.argv[1:]
    verbose = "-v" in args
    pattern = None
    mods = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-k":
            i += 1
            pattern = args[i]
        elif a != "-v":
            mods.append(a[:-3] if a.endswith(".py") else a)
        i += 1
    if not mods:
        mods = sorted(
            n[:-3] for n in os.listdir("tests") if n.startswith("test_") and n.endswith(".py")
        )
    sys.exit(1 if run(mods, pattern, verbose) else 0)


main()

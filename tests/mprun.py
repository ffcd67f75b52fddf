# The MicroPython side of the suite: imports every tests/test_*.py, runs each test_* function,
# prints failures and one closing line "micropython: N passed, M failed, K skipped".
# Usage (from the repo root): MICROPYPATH=lib:tests:.frozen micropython -X heapsize=128K tests/mprun.py [filter]
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


def main():
    here = "tests"
    args = sys.argv[1:]
    verbose = "-v" in args
    pattern = None
    for a in args:
        if a != "-v":
            pattern = a
    mods = sorted(n[:-3] for n in os.listdir(here) if n.startswith("test_") and n.endswith(".py"))
    passed = failed = skipped = 0
    failures = []
    for name in mods:
        try:
            mod = __import__(name)
        except Exception as e:
            print("ERROR importing", name)
            _print_exc(e)
            failed += 1
            failures.append(name)
            continue
        tests = sorted(k for k in dir(mod) if k.startswith("test_"))
        for t in tests:
            full = name + "::" + t
            if pattern and pattern not in full:
                continue
            fn = getattr(mod, t)
            if not callable(fn):
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
        sys.modules.pop(name, None)
    for f in failures:
        print("failed:", f)
    print("micropython: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.exit(1 if failed or not passed else 0)


main()

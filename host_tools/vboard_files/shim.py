# Start-up of the virtual board, run by host_tools/vboard.py as
#   micropython -X heapsize=H -i shim.py FILES_DIR FLASH_DIR MODE
# It loads the fake machine/network modules, mounts FLASH_DIR as "/" like a board's flash,
# runs boot.py (and main.py in friendly mode), then returns to the interpreter's own REPL.
# The two escape sequences mark "Python is running" and "REPL starts next" for the bridge.


def _vboard_start():
    import sys

    import vfs

    files, flash, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, files)
    import os  # an os.py there extends the built-in one (rename fix)

    import machine  # noqa: F401  (a file machine.py shadows the unix port's built-in one)
    import network  # noqa: F401  (all three stay in sys.modules after the remount below)

    vfs.umount("/")
    vfs.mount(vfs.VfsPosix(flash), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    del sys.argv[1:]
    g = globals()
    try:
        # from here on the bridge forwards Ctrl-C, which ends boot.py/main.py like on a board
        sys.stdout.write("\x1b]midge;up\x07")
        for name in ("boot.py", "main.py") if mode == "friendly" else ("boot.py",):
            try:
                os.stat(name)
            except OSError:
                continue
            try:
                with open(name) as f:
                    code = f.read()
                exec(code, g)
            except Exception as e:
                sys.print_exception(e)
    except KeyboardInterrupt as e:
        sys.print_exception(e)
    sys.stdout.write("\x1b]midge;repl\x07")


_vboard_start()
del _vboard_start

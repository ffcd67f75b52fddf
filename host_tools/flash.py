"""`midge flash --board B --firmware FILE [--port P] [--erase] [--dry-run]`: write MicroPython
to a board, after checking the file is an image for that board.

- esptool boards (ESP32, ESP32-S3): the image is checked (host_tools/esp_image.py), then
  `python -m esptool --chip C --port P ... write-flash [--erase-all] OFFSET FILE` runs;
- UF2 boards (Pico W, Pico 2 W): the file is checked (host_tools/uf2.py) and copied onto the
  BOOTSEL drive (found by its INFO_UF2.TXT, or --drive);
then, with --port, waits until the board's REPL answers again. --dry-run checks the file and
prints the exact plan (the esptool command line, or the copy) without touching a board.
"""

import os
import shlex
import subprocess
import sys
import time

from host_tools import boardinfo, esp_image, mpr, uf2
from host_tools.cli import CLIError

BAUD = 460800
NO_PORT = ("could not open", "port is busy or doesn't exist", "no such file or directory")
NO_ANSWER = ("failed to connect", "no serial data received", "timed out waiting for packet")


def esptool_argv(board, port, firmware, erase=False, baud=BAUD, connect_attempts=None):
    argv = [sys.executable, "-m", "esptool", "--chip", board["chip"], "--port", port]
    argv += ["--baud", str(baud), "--before", "default-reset", "--after", "hard-reset"]
    if connect_attempts is not None:
        argv += ["--connect-attempts", str(connect_attempts)]
    argv += ["write-flash"]
    if erase:
        argv += ["--erase-all"]
    argv += ["0x%x" % board["flash_offset"], os.path.abspath(firmware)]
    return argv


def run_esptool(argv, port, timeout):
    """Run esptool; its failure becomes one line naming the port."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CLIError("%s: esptool did not finish within %.0f s" % (port, timeout)) from None
    if r.returncode == 0:
        return r.stdout
    text = (r.stdout + "\n" + r.stderr).lower()
    if any(s in text for s in NO_PORT):
        raise CLIError("%s: no board there (the port cannot be opened)" % port)
    if any(s in text for s in NO_ANSWER):
        raise CLIError(
            "%s: no ESP bootloader answered (is it the right port? hold BOOT while it resets)"
            % port
        )
    last = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
    raise CLIError(
        "%s: esptool failed: %s" % (port, last[-1] if last else "status %d" % r.returncode)
    )


def wait_for_repl(port, timeout):
    """Poll until the board at port runs Python again (after a flash it reboots, and a
    USB board's port disappears for a while); return the seconds it took."""
    t0 = time.monotonic()
    last = "no answer"
    while True:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            raise CLIError(
                "%s: the REPL did not come back within %.0f s (%s)" % (port, timeout, last)
            )
        try:
            if (
                mpr.exec_(port, "print('midge-up')", timeout=min(10.0, max(left, 1.0))).strip()
                == "midge-up"
            ):
                return time.monotonic() - t0
        except CLIError as e:
            last = str(e)
        time.sleep(min(0.5, max(0.0, timeout - (time.monotonic() - t0))))


def _pick_drive(board, drive):
    family = board["uf2_family"]
    if not drive:
        return uf2.find_drive(family)
    bid = uf2.board_id(drive)
    if bid is None:
        raise CLIError("--drive %s: no INFO_UF2.TXT there, not a BOOTSEL drive" % drive)
    want = uf2.BOARD_IDS.get(family, "")
    if want and not bid.startswith(want):
        raise CLIError(
            "--drive %s is a %s bootloader, the board needs %s" % (drive, bid or "?", want)
        )
    return drive


def add_arguments(p):
    p.add_argument("--board", required=True, help="board name (boards/<name>.py)")
    p.add_argument("--firmware", required=True, help="MicroPython firmware file (.bin or .uf2)")
    p.add_argument("--port", help="serial port (esptool boards; for UF2 boards: wait for the REPL)")
    p.add_argument("--erase", action="store_true", help="erase the whole flash first (esptool)")
    p.add_argument("--dry-run", action="store_true", help="check the file and print the plan only")
    p.add_argument("--baud", type=int, default=BAUD, help="esptool baud rate (%d)" % BAUD)
    p.add_argument(
        "--connect-attempts", type=int, help="esptool connection attempts (its default 7)"
    )
    p.add_argument("--drive", help="UF2: the BOOTSEL drive folder (default: found by INFO_UF2.TXT)")
    p.add_argument("--wait", type=float, default=30, help="seconds to wait for the REPL afterwards")
    p.add_argument("--timeout", type=float, default=300, help="seconds for esptool (300)")


def run(args):
    board = boardinfo.load(args.board)
    fmt = board.get("format")
    if fmt == "esptool":
        print(
            esp_image.check_file(
                args.firmware, board["chip"], board["flash_offset"], board.get("flash_size")
            )
        )
        if not args.port:
            raise CLIError(
                "--port is required for %s (esptool writes over the serial port)" % board["name"]
            )
        argv = esptool_argv(
            board, args.port, args.firmware, args.erase, args.baud, args.connect_attempts
        )
        if args.dry_run:
            print("would run: %s" % shlex.join(argv))
            return 0
        print(
            "flashing %s at 0x%x through %s" % (board["name"], board["flash_offset"], args.port),
            flush=True,
        )
        run_esptool(argv, args.port, args.timeout)
    elif fmt == "uf2":
        print(uf2.check_file(args.firmware, board["uf2_family"], board["flash_size"]))
        if args.erase:
            raise CLIError(
                "--erase is for esptool boards; a UF2 copy rewrites what the image covers"
            )
        drive = _pick_drive(board, args.drive)
        if args.dry_run:
            print("would copy %s to %s" % (os.path.abspath(args.firmware), drive))
            return 0
        print("copied to %s" % uf2.copy_to_drive(args.firmware, drive), flush=True)
    else:
        raise CLIError("board %s has no firmware to flash (format %r)" % (board["name"], fmt))
    if args.port:
        print("waiting for the REPL on %s" % args.port, flush=True)
        print("REPL answered after %.1f s" % wait_for_repl(args.port, args.wait))
    return 0

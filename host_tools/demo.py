"""`make demo` / `midge demo`: the drone demo, everything on this machine.

midge's broker runs on the MicroPython interpreter (as on a board) on 127.0.0.1; two
virtual boards (host_tools/vboard.py: the real MicroPython behind a pty, a folder as flash)
get the board files (host_tools/fwlayout.py) and a provisioned config.json, boot and run
firmware/main.py as drones; a subscriber on midge's CPython client prints what arrives.
Ctrl-C (or --duration) stops everything; every process started here is stopped by PID.
"""

import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from host_tools import fwlayout
from host_tools.cli import CLIError

ROOT = fwlayout.ROOT
# (sensor id, board it pretends to be, what it measures, QoS)
DRONES = [("drone01", "esp32", ["altitude"], 1), ("drone40", "rpi-pico-w", ["temperature"], 0)]
START_TIMEOUT = 15.0


def add_arguments(p):
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--interval-ms", type=int, default=1000, help="drone reading interval")
    p.add_argument("--workdir", help="folder for the boards' flash (default: a temporary one)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(*parts):
    print(*parts, flush=True)


class Console(threading.Thread):
    """Prints a process's or a board's output lines with a [name] prefix."""

    def __init__(self, name, fd, owned=False):
        super().__init__(name="console-" + name, daemon=True)
        self.label, self.fd, self.owned = name, fd, owned  # owned: close fd when done
        self.stopping = False
        self.lines = []

    def stop(self):
        self.stopping = True
        self.join(1)
        if self.owned:
            os.close(self.fd)

    def run(self):
        buf = b""
        while not self.stopping:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.2)
                data = os.read(self.fd, 4096) if r else None
            except OSError:
                return
            if data == b"":
                return
            buf += (data or b"").replace(b"\r", b"")
            *done, buf = buf.split(b"\n")
            for line in done:
                text = line.decode("utf-8", "replace")
                self.lines.append(text)
                say("[%s] %s" % (self.label, text))


class Demo:
    def __init__(self, args):
        self.args = args
        self.own_dir = not args.workdir
        self.dir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="midge-demo-"))
        self.port = free_port()
        self.broker = None
        self.boards = []
        self.consoles = []
        self.client = None
        self.counts = {d[0]: 0 for d in DRONES}

    # ---- start
    def start_broker(self):
        from host_tools.vboard import micropython_exe

        exe = micropython_exe()
        if not exe:
            raise CLIError("micropython not found: run `make venv`")
        env = dict(os.environ, MICROPYPATH=os.path.join(ROOT, "lib") + ":.frozen")
        self.broker = subprocess.Popen(
            [exe, "-m", "midge.broker", "--port", str(self.port)],
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only the demo, which stops it
        )
        con = Console("broker", self.broker.stdout.fileno())
        con.start()
        self.consoles.append(con)
        self.wait(lambda: any("listening" in ln for ln in con.lines), "the broker to listen")
        say(
            "midge demo: broker on MicroPython at 127.0.0.1:%d (pid %d)"
            % (self.port, self.broker.pid)
        )

    def start_drone(self, sensor_id, board, kinds, qos):
        from host_tools.vboard import VirtualBoard

        flash = os.path.join(self.dir, sensor_id)
        fwlayout.build(flash)
        ssid, wifi_pw = "midge-demo", secrets.token_hex(8)  # the virtual access point's
        config = {
            "board": board,
            "role": "sensor",
            "wifi": {"ssid": ssid, "password": wifi_pw},
            "broker": {"host": "127.0.0.1", "port": self.port},
            "sensor": {
                "id": sensor_id,
                "interval_ms": self.args.interval_ms,
                "qos": qos,
                "kinds": kinds,
            },
        }
        with open(os.path.join(flash, "config.json"), "w") as f:
            json.dump(config, f)
        vb = VirtualBoard(flash, board=board, wifi={ssid: wifi_pw})
        self.boards.append(vb)
        vb.start()
        fd = os.open(vb.device, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        con = Console(sensor_id, fd, owned=True)
        con.start()
        self.consoles.append(con)
        say(
            "midge demo: %s on a virtual %s board (%s, pid %d): %s every %d ms, QoS %d"
            % (sensor_id, board, vb.device, vb.pid, "+".join(kinds), self.args.interval_ms, qos)
        )

    def subscribe(self):
        from midge.client import Client, MQTTException

        t0 = time.monotonic()

        def show(topic, payload, msg):
            drone = topic.split("/")[1] if topic.count("/") == 2 else None
            if drone in self.counts and not topic.endswith("/status"):
                self.counts[drone] += 1
            say(
                "%6.2fs  %s %s" % (time.monotonic() - t0, topic, payload.decode("utf-8", "replace"))
            )

        self.client = Client("demo-sub-%d" % os.getpid(), "127.0.0.1", self.port, keepalive=30)
        self.client.set_callback(show)
        try:
            self.client.connect()
            self.client.subscribe("sensors/#", qos=1)
        except MQTTException as e:
            raise CLIError("subscriber: %s" % e) from None
        say("midge demo: subscribed to sensors/# (Ctrl-C stops everything)")

    def wait(self, ready, what):
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if self.broker.poll() is not None:
                raise CLIError("the broker exited (status %s)" % self.broker.returncode)
            if time.monotonic() > deadline:
                raise CLIError("timed out after %d s waiting for %s" % (START_TIMEOUT, what))
            time.sleep(0.05)

    # ---- run and stop
    def run(self):
        self.start_broker()
        for drone in DRONES:
            self.start_drone(*drone)
        self.subscribe()
        end = time.monotonic() + self.args.duration if self.args.duration else None
        while end is None or time.monotonic() < end:
            left = 1000 if end is None else max(0, int((end - time.monotonic()) * 1000))
            self.client.loop(min(left, 1000))
            if self.broker.poll() is not None:
                raise CLIError("the broker exited (status %s)" % self.broker.returncode)

    def stop(self):
        if self.client is not None:
            self.client.disconnect()
        for vb in self.boards:
            vb.stop()
        if self.broker is not None and self.broker.poll() is None:
            self.broker.terminate()
            try:
                self.broker.wait(5)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait()
        for con in self.consoles:
            con.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def run(args):
    if args.duration is not None and args.duration <= 0:
        raise CLIError("--duration must be positive")
    if args.interval_ms < 100:
        raise CLIError("--interval-ms must be at least 100")
    signal.signal(signal.SIGTERM, _sigterm)
    demo = Demo(args)
    interrupted = False
    try:
        demo.run()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        demo.stop()
    got = ", ".join("%s: %d readings" % kv for kv in demo.counts.items())
    say("midge demo: stopped (%s); broker and boards stopped" % got)
    if not interrupted and not all(demo.counts.values()):
        missing = [d for d, n in demo.counts.items() if not n]
        raise CLIError("no readings from %s" % ", ".join(missing))
    return 0


if __name__ == "__main__":
    from host_tools.cli import main

    sys.exit(main(["demo"] + sys.argv[1:]))

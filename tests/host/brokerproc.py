"""Start midge's broker as a real process (CPython or MicroPython) for the host tests.

Each Broker owns its process and stops it by PID; every wait has a timeout.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(ROOT, "lib")
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")

# runtime name -> command prefix (the module and its arguments follow)
RUNTIMES = {
    "cpython": [sys.executable, "-m", "midge.broker"],
    "fast": [sys.executable, "-m", "midge.broker_fast"],
    "micropython": [MICROPYTHON, "-X", "heapsize=256K", "-m", "midge.broker"],
}


def available(runtime):
    if runtime == "fast" and not os.path.exists(os.path.join(LIB, "midge", "broker_fast.py")):
        return False
    return runtime != "micropython" or os.path.exists(MICROPYTHON)


def compile_lib(dest):
    """lib/midge as .mpy files under dest (what a board loads): mpy-cross, as `make bench`."""
    sys.path.insert(0, ROOT)
    from host_tools.bench_codec import compile_lib

    compile_lib(dest)
    return dest


class Broker:
    """One broker process. Its output (stdout and stderr) goes to a file, never to a pipe that
    nobody drains; the start line is awaited with a deadline and the process is killed if the
    start fails in any way."""

    def __init__(self, runtime, config=None, args=(), port=None, heap=None, lib=LIB, cmd=None):
        """heap: MicroPython heap size (e.g. "128K"); lib: where midge is (a .mpy dir too);
        port=0: no --port (the config's listener decides); cmd: a whole command line instead
        of the runtime's (e.g. the `midge broker` console script)."""
        self.runtime = runtime
        self.port = harness.free_port() if port is None else port
        if cmd is None:
            cmd = list(RUNTIMES[runtime])
            if heap:
                cmd[2] = "heapsize=" + heap
        cmd = list(cmd)
        if self.port:
            cmd += ["--port", str(self.port)]
        cmd += list(args)
        if config:
            cmd += ["--config", config]
        env = dict(os.environ, PYTHONPATH=lib, MICROPYPATH=lib + ":.frozen", PYTHONUNBUFFERED="1")
        fd, self.log_path = tempfile.mkstemp(
            prefix="broker-", suffix=".log", dir=os.environ.get("MIDGE_TEST_TMP")
        )
        self.proc = None
        try:
            with os.fdopen(fd, "wb") as out:
                self.proc = subprocess.Popen(
                    cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            self.first_line = self.wait_output("\n", timeout=10).split("\n", 1)[0]
            if self.port:
                harness.wait_port(self.port, timeout=10, proc=self.proc)
        except Exception as e:
            out = self.kill(signal.SIGKILL)
            raise RuntimeError("broker did not start (%s); output:\n%s" % (e, out)) from None
        except BaseException:
            self.kill(signal.SIGKILL)
            raise

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_output(self, text, timeout=5.0):
        """The output once it contains text (waiting at most timeout s)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.output()
            if text in out:
                return out
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "broker exited (%s) before printing %r:\n%s" % (self.proc.returncode, text, out)
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "broker did not print %r within %.1f s:\n%s" % (text, timeout, out)
                )
            time.sleep(0.02)

    def kill(self, sig=None, wait=5):
        """Stop the process (SIGTERM, or sig), SIGKILL if it lingers past `wait` s; returns
        its output."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM if sig is None else sig)
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        out = self.output()
        return out

    def stop_clean(self, sig=signal.SIGINT):
        """Stop with sig and assert a clean exit: "stopped", no traceback; returns the output."""
        out = self.kill(sig, wait=15)  # a loaded machine can take seconds to run the stop
        assert self.proc.returncode in (0, 130), (self.proc.returncode, out)
        assert out.rstrip().endswith("midge broker: stopped"), out
        assert_clean(out)
        return out

    def rss(self):
        with open("/proc/%d/statm" % self.proc.pid) as f:
            return int(f.read().split()[1]) * 4096


def assert_clean(out):
    """No bug in a broker's output: no traceback, internal error or failed task."""
    for bad in ("Traceback", "internal error", "Task exception", "Error:"):
        assert bad not in out, "broker output has %r:\n%s" % (bad, out[-4000:])


class Raw:
    """A raw MQTT socket speaking through midge's codec: for malformed and exact sequences."""

    def __init__(self, port, timeout=5.0):
        sys.path.insert(0, LIB)
        from midge import codec

        self.codec = codec
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.dec = codec.Decoder()

    def send(self, pkt):
        self.sock.sendall(pkt if isinstance(pkt, (bytes, bytearray)) else self.codec.encode(pkt))

    def recv(self, timeout=5.0):
        """The next packet, or None when the broker closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            p = self.dec.next_packet()
            if p is not None:
                return p
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet within %.1f s" % timeout)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.dec.receive_data(data)

    def connect(self, cid, **kw):
        self.send(self.codec.Connect(cid, **kw))
        return self.recv()

    def close(self):
        self.sock.close()

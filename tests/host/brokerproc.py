"""Start midge's broker as a real process (CPython or MicroPython) for the host tests.

Each Broker owns its process and stops it by PID; every wait has a timeout.
"""

import os
import socket
import subprocess
import sys
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
    def __init__(self, runtime, config=None, args=(), port=None, heap=None, lib=LIB):
        """heap: MicroPython heap size (e.g. "128K"); lib: where midge is (a .mpy dir too)."""
        self.runtime = runtime
        self.port = port or harness.free_port()
        cmd = list(RUNTIMES[runtime])
        if heap:
            cmd[2] = "heapsize=" + heap
        cmd += ["--port", str(self.port)] + list(args)
        if config:
            cmd += ["--config", config]
        env = dict(os.environ, PYTHONPATH=lib, MICROPYPATH=lib + ":.frozen")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.first_line = self.proc.stdout.readline().decode(errors="replace")
        harness.wait_port(self.port, timeout=10, proc=self.proc)

    def kill(self, sig=None):
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.stdout.read().decode(errors="replace")

    def rss(self):
        with open("/proc/%d/statm" % self.proc.pid) as f:
            return int(f.read().split()[1]) * 4096


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

"""CPython-side test harness: real Mosquitto brokers on free loopback ports.

Used by tests/conftest.py (pytest) and tests/run_micropython.py (the MicroPython run), so both
runtimes test against the same kind of broker. Every process started here is stopped by PID.
"""

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

AUTH_USER = "drone"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=5.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                "process exited with %s before listening on %d" % (proc.returncode, port)
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listening on 127.0.0.1:%d after %.1f s" % (port, timeout))


def mosquitto_path():
    for p in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if p and os.path.exists(p):
            return p
    return None


class Mosquitto:
    """One real Mosquitto on 127.0.0.1:<free port>; auth=True adds a password file."""

    def __init__(self, auth=False, extra=""):
        self.auth = auth
        self.extra = extra
        self.dir = tempfile.mkdtemp(prefix="midge-mosq-")
        self.port = free_port()
        self.password = "pw-" + os.urandom(6).hex() if auth else ""
        self.proc = None

    def start(self):
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto is not installed")
        conf = os.path.join(self.dir, "mosquitto.conf")
        lines = ["listener %d 127.0.0.1" % self.port, "persistence false", "log_type none"]
        if self.auth:
            pwfile = os.path.join(self.dir, "passwd")
            subprocess.run(
                ["mosquitto_passwd", "-b", "-c", pwfile, AUTH_USER, self.password],
                check=True,
                capture_output=True,
            )
            os.chmod(pwfile, 0o600)
            lines += ["allow_anonymous false", "password_file " + pwfile]
        else:
            lines += ["allow_anonymous true"]
        if os.geteuid() == 0:
            lines.append(
                "user root"
            )  # else it drops to 'mosquitto', who cannot read the 0600 passwd
        if self.extra:
            lines.append(self.extra)
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_port(self.port, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_brokers():
    """Start the anon and auth brokers and export their addresses for tests/support.py.

    Returns the list of started brokers (empty when Mosquitto is missing and not required).
    """
    if mosquitto_path() is None:
        if os.environ.get("MIDGE_REQUIRE_MOSQUITTO"):
            raise RuntimeError("MIDGE_REQUIRE_MOSQUITTO is set but mosquitto is not installed")
        return []
    anon = Mosquitto().start()
    try:
        auth = Mosquitto(auth=True).start()
    except BaseException:
        anon.stop()
        raise
    os.environ["MIDGE_TEST_MOSQUITTO_ANON"] = anon.addr
    os.environ["MIDGE_TEST_MOSQUITTO_AUTH"] = auth.addr
    os.environ["MIDGE_TEST_AUTH_PASSWORD"] = auth.password
    return [anon, auth]


@contextlib.contextmanager
def process_group(cmd, **kw):
    """cmd started in its own session (stdout piped unless given); on the way out (a failed
    assert, a timeout) its whole process group is killed and its pipes closed."""
    kw.setdefault("stdout", subprocess.PIPE)
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    try:
        yield p
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()


def read_until(p, done, secs):
    """p's stdout (str) up to the point where done(text) holds, its end, or secs (select,
    never a blocking read)."""
    fd, out = p.stdout.fileno(), b""
    end = time.monotonic() + secs
    while not done(out.decode("utf-8", "replace")):
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        data = os.read(fd, 4096)
        if not data:
            break
        out += data
    return out.decode("utf-8", "replace")

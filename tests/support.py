# Helpers shared by the suite on both runtimes (pytest on CPython, tests/mprun.py on MicroPython).
# Only the MicroPython subset here: the same file is imported by both runners.
import os
import sys

MICROPYTHON = sys.implementation.name == "micropython"

# MQTT control packet types (3.1.1 section 2.2.1). The codec keeps its own as private
# constants, folded into its bytecode, so the tests name them here.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = range(1, 8)
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)


class Skip(Exception):
    pass


def skip(reason):
    """Skip the running test: pytest.skip under pytest, Skip under mprun."""
    try:
        import pytest  # noqa: F401  (absent on MicroPython)
    except ImportError:
        raise Skip(reason) from None
    pytest.skip(reason)


def raises(exc_type, fn, *args, **kw):
    """Call fn and return the exception of exc_type it raised; fail if it did not raise."""
    try:
        fn(*args, **kw)
    except exc_type as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc_type.__name__))


try:  # on a board, `midge test` writes the settings here (boards have no os.getenv)
    from boardenv import ENV as _BOARD_ENV  # type: ignore[import-not-found]
except ImportError:
    _BOARD_ENV = {}


def env(name):
    v = _BOARD_ENV.get(name) or (os.getenv(name) if hasattr(os, "getenv") else None)
    return v if v else None


def mosquitto(kind="anon"):
    """(host, port) of the Mosquitto the runner started: kind 'anon' or 'auth'.

    The auth broker knows user 'drone' with password from auth_password(). When no broker
    was started, the test is skipped, or fails when MIDGE_REQUIRE_MOSQUITTO is set (CI).
    """
    v = env("MIDGE_TEST_MOSQUITTO_" + kind.upper())
    if not v:
        if env("MIDGE_REQUIRE_MOSQUITTO"):
            raise AssertionError(
                "Mosquitto is required (MIDGE_REQUIRE_MOSQUITTO) but was not started"
            )
        skip("no Mosquitto broker (install mosquitto)")
    host, port = v.rsplit(":", 1)
    return host, int(port)


def auth_password():
    return env("MIDGE_TEST_AUTH_PASSWORD") or ""


_n = [0]


def tmpdir():
    """A fresh empty directory under the runner's scratch folder."""
    base = env("MIDGE_TEST_TMP") or "/tmp"
    _n[0] += 1
    path = "%s/t%d_%d" % (base, os.getpid() if hasattr(os, "getpid") else 0, _n[0])
    try:
        os.mkdir(path)
    except OSError:
        pass
    return path


def _run_id():
    # Two interpreters share a broker (modules run in parallel): a per-process random tag.
    try:
        r = os.urandom(4)
    except (AttributeError, OSError):
        import random

        r = bytes(random.getrandbits(8) for _ in range(4))
    return "".join("%02x" % b for b in r)


_RUN = _run_id()


def unique(prefix):
    """A topic/client-id fragment unique to this process and call, so tests sharing a broker
    (and interpreters running side by side) never collide."""
    _n[0] += 1
    return "%s%s%s%d" % (prefix, "mp" if MICROPYTHON else "cp", _RUN, _n[0])


def plain(v):
    """v with memoryviews and bytearrays as bytes and tuples as lists: comparable, printable,
    and safe to keep after the decoder that made it moves on."""
    if isinstance(v, (memoryview, bytearray)):
        return bytes(v)
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v

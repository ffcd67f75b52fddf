# The one module that knows which runtime it is on (MicroPython or CPython).
# Everything else imports const, ticks and memory figures from here.
import sys
import time

MICROPYTHON = sys.implementation.name == "micropython"

if MICROPYTHON:
    from micropython import const  # noqa: F401

    ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    ticks_add = time.ticks_add  # type: ignore[attr-defined]
    sleep_ms = time.sleep_ms  # type: ignore[attr-defined]
else:

    def const(x):
        return x

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b

    def sleep_ms(ms):
        time.sleep(ms / 1000)


def unsent(w):
    """Bytes an asyncio stream writer holds that are not on the socket yet."""
    if MICROPYTHON:
        return len(w.out_buf)
    return w.transport.get_write_buffer_size()


def mem_alloc():
    """Heap bytes in use: gc.mem_alloc() on MicroPython, None on CPython."""
    if MICROPYTHON:
        import gc

        return gc.mem_alloc()  # type: ignore[attr-defined]
    return None


def mem_free():
    if MICROPYTHON:
        import gc

        return gc.mem_free()  # type: ignore[attr-defined]
    return None


def rss_bytes():
    """Resident set size of this process where the OS tells it (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except (OSError, ValueError, IndexError):
        return None


def set_nodelay(sock):
    """Turn off Nagle where the stack allows it; one write per packet makes this a bonus."""
    try:
        sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (same numbers on Linux and lwIP)
    except (OSError, AttributeError, TypeError, ValueError):
        pass


# Sockets for a poll-driven client: reads take what has arrived (never wait to fill the
# buffer), writes go out whole, waiting at most WRITE_TIMEOUT s when the send buffer is full.
WRITE_TIMEOUT = 10

if MICROPYTHON:

    def sock_setup(sock):
        sock.setblocking(False)  # a blocking MicroPython readinto() waits to fill the buffer

    def sock_write(sock, buf, n):
        """Write buf[:n] (no slice, so no allocation)."""
        i = sock.write(buf, n) or 0
        if i < n:
            sock.settimeout(WRITE_TIMEOUT)
            try:
                i += sock.write(buf, i, n - i) or 0
            finally:
                sock.setblocking(False)
            if i < n:
                raise OSError(110)  # ETIMEDOUT

    def sock_readinto(sock, buf):
        return sock.readinto(buf)

else:

    def sock_setup(sock):
        sock.settimeout(WRITE_TIMEOUT)

    def sock_write(sock, buf, n):
        sock.sendall(memoryview(buf)[:n])

    def sock_readinto(sock, buf):
        return sock.recv_into(buf)


def format_exception(e):
    """The traceback of e as text: for logging an unexpected error (a bug) where it happened."""
    if MICROPYTHON:
        import io

        buf = io.StringIO()
        sys.print_exception(e, buf)  # type: ignore[attr-defined]
        return buf.getvalue()  # type: ignore[attr-defined]
    import traceback

    return "".join(traceback.format_exception(type(e), e, e.__traceback__))

# midge broker, asyncio-streams driver: the same file runs on MicroPython and CPython.
#   MICROPYPATH=lib:.frozen micropython -m midge.broker [--host H] [--port N] [--config F] [-v]
#   python -m midge.broker ...   (on CPython `midge broker` uses the faster broker_fast driver)
# One task per connection reads into a shared buffer and feeds the sans-I/O core; after each
# read every connection with output gets one write. Nothing else runs per message.
import asyncio
import gc
import sys

from midge import broker_core
from midge.broker_sess import is_loopback, peer_name, run_once
from midge.compat import (
    MICROPYTHON,
    const,
    format_exception,
    mem_alloc,
    mem_free,
    ticks_ms,
    unsent,
)

_LOW_HEAP = const(32768)  # bytes free under which each new client starts with gc.collect()


# The read buffer is taken at import, while the heap is whole: after a restore from the
# journal a board's heap may no longer hold 2 KB in one piece.
_RBUF = memoryview(bytearray(2048))


def setup(opts, log):
    """(core, listeners, store) from parsed options and the config file; the exceptions
    (ConfigError, AuthError, UsageError, OSError) carry one-line messages."""
    return _conf("setup", opts, log)


def _conf(fn, *args):
    # brokerconf's code is only needed at start-up: unloaded afterwards (7 KB of a board's heap)
    return run_once("brokerconf", fn, *args)


def make_log(verbose):
    def log(level, msg):
        if level == broker_core.WARN or verbose:
            print("midge broker: " + msg)

    return log


def log_bug(core, where, e):
    """An exception nobody expected (not a socket error, not a protocol error): a bug in midge.
    Always logged, with its traceback: it must never pass for a closed connection."""
    core.log(
        broker_core.WARN, "%s: internal error (a bug in midge)\n%s" % (where, format_exception(e))
    )


class Server:
    def __init__(self, core, store=None):
        self.core = core
        self.store = store
        self.mv = _RBUF  # shared: read, fed (copied) and reused at once
        # core.send_now stays unset: a publisher's ack written on its own, before the routing,
        # left a 128K board's heap too fragmented for a 4 KB output (test_broker_peers)
        free = mem_free()
        if free is not None:
            # a small heap: a client that stops reading may hold only a slice of it in
            # unsent QoS 0 output (then its messages are dropped and counted), or one slow
            # subscriber's backlog runs the heap out for everybody
            core.max_wbuf = min(core.max_wbuf, free // 16)

    def _accept(self, w):
        """A Conn for the socket behind w, or None when the core refuses it."""
        core = self.core
        addr = w.get_extra_info("peername")
        free = mem_free()
        if free is not None and free < _LOW_HEAP:
            # a small heap: free the garbage first, so that this client's long-lived objects
            # fill the holes it leaves instead of fragmenting the rest of the heap
            gc.collect()
        try:
            c = core.connect(addr, is_loopback(addr), ticks_ms())
        except MemoryError as e:
            core.log(broker_core.WARN, "refused %s: out of memory (%s)" % (peer_name(addr), e))
            return None
        if c is not None:
            c.io = w
            c.task = asyncio.current_task()
        return c

    async def client(self, r, w):
        # this frame lives as long as the connection: few locals
        core = self.core
        c = self._accept(w)
        if c is not None:
            try:
                mv = self.mv
                readinto = getattr(r, "readinto", None)  # MicroPython: no allocation per read
                while c.closing is None:
                    if readinto is not None:
                        n = await readinto(mv)
                        if not n:
                            break
                        data = mv[:n]
                    else:
                        data = await r.read(65536)
                        if not data:
                            break
                    core.feed(c, data, ticks_ms())
                    if self.store is not None:
                        self.store.sync()
                    self.flush()
            except asyncio.CancelledError:
                pass
            except MemoryError as e:
                core.log(
                    broker_core.WARN, "%s: out of memory, connection closed (%s)" % (c.name(), e)
                )
            except OSError as e:  # a reset socket: this client only
                if c.closing is None and core.verbose:
                    core.log(broker_core.INFO, "%s: %r" % (c.name(), e))
            except Exception as e:  # a bug: this client only, and loudly
                log_bug(core, c.name(), e)
            c.task = None
            try:
                core.closed(c, ticks_ms())
                self.flush()
            except MemoryError:  # the will or the flush: this client is gone anyway
                core.log(broker_core.WARN, "%s: out of memory while closing" % c.name())
        try:
            w.close()
            if c is not None and c.backlog:  # given up on (see ticker): do not wait for it
                t = getattr(w, "transport", None)  # CPython's close() waits for the backlog
                if t is not None:
                    t.abort()
            await w.wait_closed()
        except Exception:
            pass

    def flush(self):
        core = self.core
        for c in core.take_pending():
            w = c.io
            if w is None:
                continue
            while not c.backlog:
                data = core.take_output(c)
                if data is None:
                    break
                try:
                    w.write(data)
                except OSError:  # that peer is gone (EPIPE): its own task closes it
                    self._stop(c)
                    break
                c.backlog = unsent(w)  # not 0: draining, see _drain
                if c.backlog:
                    c.drainer = asyncio.create_task(self._drain(c))
                elif c.owed:  # written: room for more of the retained messages it is owed
                    core.resume(c)
            if c.closing is not None and not c.backlog:
                self._stop(c)

    def _stop(self, c):
        for t in (c.task, c.drainer):
            if t is not None and t is not asyncio.current_task():
                t.cancel()
        c.task = c.drainer = None

    async def _drain(self, c):
        # MicroPython's Stream.drain() drops bytes written while it runs, so while a drain is
        # under way new output stays in c.out and is written here afterwards.
        w = c.io
        core = self.core
        try:
            while True:
                await w.drain()
                data = core.take_output(c)
                if data is None:
                    break
                w.write(data)
        except OSError:  # the peer is gone: its reader task closes it
            pass
        c.drainer = None
        c.backlog = 0
        if c.owed:
            core.resume(c)
            self.flush()
        if c.closing is not None:
            self._stop(c)

    async def ticker(self):
        core = self.core
        board = mem_alloc() is not None  # a small heap: collect once a second, $SYS exact
        free = mem_free()
        if free is not None:
            # collect after every free/16 bytes allocated, not only when the heap is full:
            # garbage is freed while it is still low in the heap, so new objects fill its
            # holes instead of spreading over all of it. Without this, 1,000 clients' objects
            # ended up scattered over an 8 MB heap that then had no free run of 15 KB for a
            # dict of 900 entries (MemoryError, clients closed in the wildcard bench).
            gc.threshold(free // 16)
        while True:
            await asyncio.sleep(1)
            try:
                if board:
                    gc.collect()
                core.tick(ticks_ms())
                for c in core.conns:
                    # closed by the broker (keepalive expired, a protocol error) while its
                    # output waits for a peer that reads nothing: given up after 2 s, or its
                    # reader and writer tasks and its objects would stay until TCP gives up
                    if c.closing is not None and c.backlog:
                        c.stuck += 1
                        if c.stuck > 2:
                            self._stop(c)
                if self.store is not None:
                    self.store.step(ticks_ms())
                self.flush()
            except MemoryError:  # short of heap: skip this round, the clients go on
                gc.collect()
                core.log(broker_core.WARN, "out of memory in housekeeping")
            except Exception as e:  # a bug: logged, and keepalive goes on next second
                log_bug(core, "housekeeping", e)


def _presize_poller(n):
    # MicroPython's asyncio keeps the sockets it waits on in a dict and in its poll object's
    # table: both grown to n entries now, while the heap is whole; grown later, with ~22
    # clients connected, they ask for 464 contiguous bytes that a 128K heap no longer has.
    q = getattr(getattr(asyncio, "core", None), "_io_queue", None)
    if q is None or q.map:
        return  # CPython, or already in use
    q.map = broker_core.sized(n)
    try:
        for fd in range(1000, 1000 + n):  # never polled: unregistered at once
            q.poller.register(fd)
        for fd in range(1000, 1000 + n):
            q.poller.unregister(fd)
    except (TypeError, ValueError, OSError):
        pass  # a port that only polls streams: its table grows with the clients


async def serve(core, listeners, store, ready=None):
    srv = Server(core, store)
    _presize_poller(24)
    servers = []
    for host, port in listeners:
        servers.append(await asyncio.start_server(srv.client, host, port, backlog=128))
    if hasattr(core, "start_bridges"):  # bridge.Bridged
        core.start_bridges(srv)
    if ready is not None:
        ready(listeners)
    await srv.ticker()


def announce(listeners, runtime):
    where = ", ".join("%s:%d" % hp for hp in listeners)
    print("midge broker %s listening on %s (%s)" % (broker_core.VERSION[6:], where, runtime))
    try:
        sys.stdout.flush()
    except AttributeError:
        pass


def main(argv=None, serve_fn=serve, runtime=None):
    """Both drivers' start-up and shutdown (broker_fast passes its own serve_fn and runtime):
    serve_fn(core, listeners, store, ready) serves until stopped. Exit status 0, 1 (cannot
    listen) or 2 (config)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = _conf("parse_args", argv)  # {'host', 'port', 'config', 'verbose'}
        core, listeners, store = setup(opts, make_log(opts["verbose"]))
    except Exception as e:  # ConfigError, AuthError, UsageError, OSError: one line
        print("midge broker: %s" % e, file=sys.stderr)
        return 2
    if runtime is None:
        runtime = ("MicroPython" if MICROPYTHON else "CPython") + ", asyncio streams"
    try:
        asyncio.run(serve_fn(core, listeners, store, lambda ls: announce(ls, runtime)))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print("midge broker: cannot listen: %s" % e, file=sys.stderr)
        return 1
    if store is not None:
        store.close(ticks_ms())
    print("midge broker: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

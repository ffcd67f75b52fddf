# midge broker, asyncio-streams driver: the same file runs on MicroPython and CPython.
#   MICROPYPATH=lib:.frozen micropython -m midge.broker [--host H] [--port N] [--config F] [-v]
#   python -m midge.broker ...   (on CPython `midge broker` uses the faster broker_fast driver)
# One task per connection reads into a shared buffer and feeds the sans-I/O core; after each
# read every connection with output gets one write. Nothing else runs per message.
import asyncio
import gc
import sys

from midge import broker_core
from midge.compat import MICROPYTHON, mem_alloc, ticks_ms

USAGE = "usage: broker [--host HOST] [--port PORT] [--config FILE] [-v]"


class UsageError(Exception):
    pass


def parse_args(argv):
    """{'host', 'port', 'config', 'verbose'}; host/port None when not given."""
    o = {"host": None, "port": None, "config": None, "verbose": False}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-v", "--verbose"):
            o["verbose"] = True
        elif a in ("-h", "--help"):
            raise UsageError(USAGE)
        elif a in ("--host", "--port", "--config", "-c", "-p"):
            if i + 1 >= len(argv):
                raise UsageError("%s needs a value\n%s" % (a, USAGE))
            i += 1
            v = argv[i]
            if a in ("--port", "-p"):
                try:
                    v = int(v)
                except ValueError:
                    v = -1
                if not 0 <= v < 65536:
                    raise UsageError("--port %r is not a port number" % argv[i])
                o["port"] = v
            else:
                o["config" if a in ("--config", "-c") else "host"] = v
        else:
            raise UsageError("unknown argument %r\n%s" % (a, USAGE))
        i += 1
    return o


def is_loopback(host):
    if isinstance(host, (bytes, bytearray)):  # MicroPython unix sockaddr_in: family, port, addr
        return len(host) >= 8 and host[4] == 127
    if isinstance(host, tuple):
        host = host[0]
    return host in ("localhost", "::1") or str(host).startswith("127.")


def peer_name(addr):
    if isinstance(addr, (bytes, bytearray)) and len(addr) >= 8:
        return "%d.%d.%d.%d:%d" % (addr[4], addr[5], addr[6], addr[7], addr[2] << 8 | addr[3])
    if isinstance(addr, tuple) and len(addr) >= 2:
        return "%s:%s" % (addr[0], addr[1])
    return str(addr)


def setup(opts, log):
    """(core, listeners, store) from parsed options and the config file; ValueError-like
    exceptions (ConfigError, AuthError, UsageError) carry one-line messages."""
    from midge import brokerconf

    conf = brokerconf.load(opts["config"]) if opts["config"] else {}
    listeners = conf.pop("listeners", None) or [("127.0.0.1", 1883)]
    if opts["host"] is not None or opts["port"] is not None:
        h0, p0 = listeners[0]
        listeners = [(opts["host"] or h0, p0 if opts["port"] is None else opts["port"])]
    for host, port in listeners:
        if not is_loopback(host) and conf.get("allow_anonymous") is not True:
            if not conf.get("password_file"):
                raise UsageError(
                    "refusing to listen on %s:%d: anonymous access is loopback-only by default;"
                    " set `allow_anonymous true` or a `password_file` in the config" % (host, port)
                )
    auth = None
    if conf.get("password_file") or conf.get("acl_file"):
        from midge import auth as authmod

        auth = authmod.Auth(conf.get("password_file"), conf.get("acl_file"))
    core = broker_core.Broker(conf, auth, log, ticks_ms())
    store = None
    if conf.get("persistence"):
        from midge import persist

        path = conf.get("persistence_file") or "midge.db"
        loc = conf.get("persistence_location")
        if loc:
            path = loc.rstrip("/") + "/" + path
        store = persist.Store(path, core, log)
        store.restore(ticks_ms())
    return core, listeners, store


def make_log(verbose):
    def log(level, msg):
        if level == broker_core.WARN or verbose:
            print("midge broker: " + msg)

    return log


def _backlog(w):
    b = getattr(w, "out_buf", None)  # MicroPython Stream; CPython StreamWriter has a transport
    return len(b) if b is not None else w.transport.get_write_buffer_size()


class Server:
    def __init__(self, core, store=None):
        self.core = core
        self.store = store
        self.mv = memoryview(bytearray(2048))  # shared: read, fed (copied) and reused at once

    async def client(self, r, w):
        core = self.core
        addr = w.get_extra_info("peername")
        try:
            c = core.connect(peer_name(addr), is_loopback(addr), ticks_ms())
        except MemoryError:
            core.log(broker_core.WARN, "refused %s: out of memory" % peer_name(addr))
            c = None
        if c is not None:
            c.io = w
            c.task = asyncio.current_task()
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
            except Exception as e:  # a reset socket or a bug: this client only
                if c.closing is None:
                    core.log(broker_core.INFO, "%s: %r" % (c.peer, e))
            c.task = None
            core.closed(c, ticks_ms())
            self.flush()
        try:
            w.close()
            await w.wait_closed()
        except Exception:
            pass

    def flush(self):
        core = self.core
        for c in core.take_pending():
            if c.io is None:
                continue
            if not c.draining:
                data = core.take_output(c)
                if data is not None:
                    w = c.io
                    w.write(data)
                    c.backlog = _backlog(w)
                    if c.backlog:
                        c.draining = True
                        asyncio.create_task(self._drain(c))
            if c.closing is not None and not c.draining:
                self._stop(c)

    def _stop(self, c):
        t = c.task
        if t is not None and t is not asyncio.current_task():
            c.task = None
            t.cancel()

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
        except Exception:
            pass
        c.backlog = 0
        c.draining = False
        if c.closing is not None:
            self._stop(c)

    async def ticker(self):
        core = self.core
        board = mem_alloc() is not None  # a small heap: collect once a second, $SYS exact
        while True:
            await asyncio.sleep(1)
            try:
                if board:
                    gc.collect()
                core.tick(ticks_ms())
                if self.store is not None:
                    self.store.step(ticks_ms())
                self.flush()
            except MemoryError:  # short of heap: skip this round, the clients go on
                gc.collect()
                core.log(broker_core.WARN, "out of memory in housekeeping")


async def serve(core, listeners, store, ready=None):
    srv = Server(core, store)
    servers = []
    for host, port in listeners:
        servers.append(await asyncio.start_server(srv.client, host, port, backlog=128))
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
        log = make_log(opts["verbose"])
        core, listeners, store = setup(opts, log)
    except Exception as e:  # ConfigError, AuthError, UsageError, OSError: one line
        print("midge broker: %s" % e, file=sys.stderr)
        return 2
    runtime = ("MicroPython" if MICROPYTHON else "CPython") + ", asyncio streams"
    try:
        asyncio.run(serve(core, listeners, store, lambda ls: announce(ls, runtime)))
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

# midge broker, CPython driver: asyncio Protocol/transport over the same sans-I/O core.
# No task and no stream object per connection. Sockets are read with recv_into() into one
# shared buffer (BufferedProtocol: a plain Protocol costs a fresh 256 KB bytes object, i.e.
# mmap + mremap + munmap, per read); each read feeds the core and then every connection with
# output gets one transport.write(). `midge broker` runs this one.
#   python -m midge.broker_fast [--host H] [--port N] [--config F] [-v]
import asyncio
import sys

from midge import broker
from midge.compat import ticks_ms


class _Conn(asyncio.BufferedProtocol):
    def __init__(self, srv):
        self.srv = srv
        self.c = None
        self.tr = None

    def connection_made(self, tr):
        srv = self.srv
        addr = tr.get_extra_info("peername")
        c = srv.core.connect(addr, broker.is_loopback(addr), ticks_ms())
        if c is None:
            tr.abort()
            return
        c.io = self.tr = tr
        tr.set_write_buffer_limits(srv.core.max_wbuf)
        self.c = c

    def get_buffer(self, sizehint):
        return self.srv.rbuf

    def buffer_updated(self, n):
        srv = self.srv
        try:
            srv.core.feed(self.c, srv.rbuf[:n], ticks_ms())
        except Exception as e:  # a bug (protocol errors are handled in the core): loudly
            broker.log_bug(srv.core, self.c.name(), e)
            self.c.io = None
            self.tr.abort()
            return
        if srv.store is not None:
            srv.store.sync()
        srv.flush()

    def connection_lost(self, exc):
        c = self.c
        if c is not None:
            c.io = None
            self.srv.core.closed(c, ticks_ms())
            self.srv.flush()

    def pause_writing(self):
        self.c.backlog = self.srv.core.max_wbuf + 1  # QoS 0 to this client is dropped meanwhile

    def resume_writing(self):
        c = self.c
        c.backlog = 0
        if c.owed:
            self.srv.core.resume(c)
            self.srv.flush()


class Server:
    def __init__(self, core, store=None):
        self.core = core
        self.store = store
        # shared by every connection: each read is fed (copied into its decoder) at once
        self.rbuf = memoryview(bytearray(1 << 18))
        core.send_now = self.write

    def write(self, c):
        """Write c's output (also the core's send_now hook)."""
        tr = c.io
        if tr is None:
            return
        core = self.core
        data = core.take_output(c)
        while data is not None:
            tr.write(data)  # may call pause_writing: then c.backlog is set
            data = None
            if c.owed and not c.backlog:
                core.resume(c)
                data = core.take_output(c)

    def flush(self):
        for c in self.core.take_pending():
            self.write(c)
            tr = c.io
            if tr is not None and c.closing is not None:
                c.io = None
                tr.close()  # after what is buffered; a peer that reads nothing: cut in 3 s
                asyncio.get_running_loop().call_later(3, tr.abort)

    def tick(self):
        asyncio.get_running_loop().call_later(1, self.tick)
        now = ticks_ms()
        try:
            self.core.tick(now)
            if self.store is not None:
                self.store.step(now)
        except Exception as e:  # a bug: logged, and keepalive goes on next second
            broker.log_bug(self.core, "housekeeping", e)
        self.flush()

    async def serve(self, listeners, ready=None):
        loop = asyncio.get_running_loop()
        for host, port in listeners:
            await loop.create_server(lambda: _Conn(self), host, port, backlog=1024)
        if hasattr(self.core, "start_bridges"):  # bridge.Bridged
            self.core.start_bridges(self)
        if ready is not None:
            ready(listeners)
        stop = asyncio.Event()
        try:
            import signal

            loop.add_signal_handler(signal.SIGTERM, stop.set)
        except (ImportError, NotImplementedError, AttributeError):
            pass
        loop.call_later(1, self.tick)
        await stop.wait()


async def serve(core, listeners, store, ready=None):
    srv = Server(core, store)
    import gc

    gc.freeze()  # start-up objects out of the collector's way; per-message objects are acyclic
    gc.set_threshold(50000, 20, 20)
    await srv.serve(listeners, ready)


def main(argv=None):
    return broker.main(argv, serve, "CPython, asyncio Protocol")


if __name__ == "__main__":
    sys.exit(main())

# asyncio MQTT client over the same sans-I/O Session as the blocking one. connect() opens
# the link and starts two tasks: a reader that only ever awaits read() (no timeout: on
# MicroPython a timed-out read drops every task waiting on the stream, and a drain loses
# bytes written meanwhile) and a runner that owns every write, drain and timer, and
# reconnects with backoff. publish() and friends never touch the stream: they put into
# the Session, wake the runner and wait for an event. run() waits on the runner.
import asyncio

from midge.client_core import MQTTException as MQTTException
from midge.client_core import Session
from midge.compat import ticks_diff, ticks_ms, unsent


async def _wait(ev, ms):
    # Wait until ev is set, at most ms (-1: no limit). Never touches a stream.
    if ms < 0:
        await ev.wait()  # (wait_for allocates a task even without a timeout)
        return
    try:
        await asyncio.wait_for(ev.wait(), ms / 1000)
    except asyncio.TimeoutError:
        pass


class AsyncClient(Session):
    """Same arguments as midge.client.Client."""

    _r = _w = _task = _rt = _rerr = None
    _nw = 0  # counts the runner's writes: what was put before has gone

    def __init__(self, *args, **kw):
        Session.__init__(self, *args, **kw)
        self._ev = asyncio.Event()  # set when packets were handled, written or the link changed
        self._wake = asyncio.Event()  # set when the runner has output to write or must stop

    async def connect(self, timeout_ms=5000):
        """Open the link, wait for CONNACK, start the tasks; return session_present."""
        self.connect_timeout = timeout_ms
        await self._open()
        self._up = True
        self._task = asyncio.create_task(self._run())
        return self.session_present

    async def run(self):
        """Keep the link (reconnecting) until disconnect(); without reconnect, raise the
        error that ended it."""
        if self._task is not None:
            await self._task

    async def _open(self):
        await self._close()
        t = self.connect_timeout
        try:
            ctx = host = None
            if self.ssl:  # a TLS setup error is a connect error, as in the blocking client
                from midge import tls

                ctx, host = tls.args(self)
            self._r, self._w = await asyncio.wait_for(
                asyncio.open_connection(self.server, self.port, ssl=ctx, server_hostname=host),
                t / 1000,
            )
            self.begin(ticks_ms())
            await self._send(t)  # CONNECT; MicroPython's TLS handshake happens in drain()
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            await self._close()
            raise MQTTException(
                "cannot connect to %s:%d: %s"
                % (self.server, self.port, str(e).strip() or "timed out")
            )
        try:  # no other task uses the stream yet: reading with a timeout is safe here
            while self._wait:  # CONNECT sent, no CONNACK yet (end() stops it): _CONNACK
                t = self.tick(ticks_ms())
                try:
                    data = await asyncio.wait_for(self._r.read(1024), t / 1000)
                except asyncio.TimeoutError:
                    continue
                except OSError as e:
                    raise MQTTException("connection lost: %s" % e)
                self._got(data)
            if not self.connected:
                raise MQTTException("not connected")
        except MQTTException:
            await self._close()  # refused or timed out: the link is not left open
            raise
        self._rerr = None
        self._rt = asyncio.create_task(self._read(self._r))

    def _got(self, data):
        if not data:
            raise MQTTException("broker closed the connection")
        self.receive_data(data)
        self.handle(ticks_ms())
        self._ev.set()
        if self.nout:
            self._wake.set()
        self.handled()

    def handled(self):
        # After each batch of received packets is handled, before the acknowledgements it
        # produced are written: a subclass may make what the messages carried safe here (the
        # broker's bridge puts it on disk); raising closes the link with them unwritten.
        pass

    async def _read(self, r):
        # The reader task: bytes in, packets handled; an error ends it and wakes the runner.
        try:
            while True:
                try:
                    data = await r.read(1024)
                except OSError as e:
                    raise MQTTException("connection lost: %s" % e)
                self._got(data)
        except Exception as e:  # the runner raises it (a handler's bug too)
            self._rerr = e
            self._wake.set()

    async def _close(self):
        t = self._rt
        if t is not None:
            self._rt = None
            t.cancel()  # closing the stream does not wake a pending read on MicroPython
        w = self._w
        if w is not None:
            self._r = self._w = None
            try:
                w.close()
                await asyncio.wait_for(w.wait_closed(), 1)  # CPython flushes first
            except (OSError, asyncio.TimeoutError):
                pass

    async def _send(self, ms):
        # Write out[:nout] in one go, then drain it within ms (0: no limit). The runner's
        # only (and _open's before the runner exists).
        w = self._w
        if self.nout and w is not None:
            w.write(bytes(memoryview(self.out)[: self.nout]))
            self.sent(ticks_ms())
            self._nw += 1
            self._ev.set()
            # a bounded drain only when bytes wait (MicroPython's wait_for allocates ~1.2 KB);
            # before CONNACK always: MicroPython's TLS handshake happens in drain()
            if unsent(w) or not self.connected:
                await asyncio.wait_for(w.drain(), ms / 1000 if ms else None)
            else:
                await asyncio.sleep(0)

    async def _run(self):
        # The runner: writes, timers and reconnects until disconnect().
        try:
            while self._up:
                self._wake.clear()
                try:
                    if self._w is None:
                        t = self.tick(ticks_ms())
                        if not t:
                            self.reconnects += 1
                            await self._open()
                            self._ev.set()
                            continue
                    else:
                        if self._rerr is not None:
                            raise self._rerr
                        await self._flush()
                        t = self.tick(ticks_ms())
                        if self.nout:  # PINGREQ
                            continue
                    await _wait(self._wake, t)
                except MQTTException as e:
                    await self._close()
                    if not self._up:
                        break
                    self.last_error = str(e)
                    self.lost(ticks_ms())
                    self._ev.set()
                    if not self.reconnect:
                        raise
            if self._w is not None:  # disconnect(): DISCONNECT goes, then the link closes
                try:
                    await self._flush()
                except MQTTException:
                    pass
        finally:  # disconnect(), a lost link without reconnect, or a handler's error
            self._up = self.connected = False
            await self._close()
            self._ev.set()

    async def _flush(self):
        ka = self.keepalive * 1500 or self.connect_timeout  # keepalive 0: still bounded
        try:
            await self._send(ka)
        except asyncio.TimeoutError:  # a drain that cannot finish in time: the link is dead
            raise MQTTException("connection lost: nothing written for %d s" % (ka // 1000))
        except (OSError, ValueError) as e:
            raise MQTTException("connection lost: %s" % str(e).strip())

    async def _until(self, pid, timeout_ms, filt=None):
        # Wake the runner, then wait until packet pid is acknowledged and return what
        # Session._left says then; for pid -1 wait until what was put is written (or the
        # link that would take it is gone).
        n = self._nw
        self._wake.set()
        await asyncio.sleep(0)  # always yield: a publish loop while offline must not starve
        t0 = ticks_ms()
        while True:
            if pid < 0:
                if n != self._nw or not (self.nout and self.connected):
                    return
                left = -1
            else:
                r = self._left(pid, timeout_ms, ticks_diff(ticks_ms(), t0), filt)
                if r is None or r >= 0:
                    return r
                if not self._up:
                    raise MQTTException("not connected")
                left = -r
            self._ev.clear()
            await _wait(self._ev, left)

    async def publish(self, topic, payload, qos=0, retain=False, wait=False, timeout_ms=30000):
        """As Client.publish, but written before it returns."""
        while True:
            pid = self.put(topic, payload, qos, retain)
            if pid >= 0:
                break
            await self._until(self._q[1][0], timeout_ms)  # the queue is full: the oldest goes
        await self._until(pid if wait and pid else -1, timeout_ms)  # QoS 0: written
        return pid

    async def subscribe(self, filt, qos=0, handler=None, timeout_ms=10000):
        """As Client.subscribe."""
        pid = self.sub(filt, qos, handler)
        if pid:
            return await self._until(pid, timeout_ms, filt)

    async def unsubscribe(self, filt, timeout_ms=10000):
        pid = self.unsub(filt)
        if pid:
            await self._until(pid, timeout_ms)

    async def disconnect(self):
        """DISCONNECT, then the link closes; run() ends."""
        self._up = False
        self.end()
        t = self._task
        while self._w is not None and t is not None and not t.done():
            self._ev.clear()
            self._wake.set()
            await self._ev.wait()
        await self._close()
        self._ev.set()

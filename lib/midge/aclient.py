# asyncio MQTT client over the same sans-I/O Session as the blocking one. connect() opens
# the link and starts one reader task; run() waits on it (it reconnects with backoff and
# ends at disconnect()). Waiting for acknowledgements is event-driven, never polled.
import asyncio

from midge.client_core import MQTTException as MQTTException
from midge.client_core import Session
from midge.compat import ticks_diff, ticks_ms


class AsyncClient(Session):
    """Same arguments as midge.client.Client."""

    _r = _w = _task = _werr = None

    def __init__(self, *args, **kw):
        Session.__init__(self, *args, **kw)
        self._ev = asyncio.Event()  # set whenever packets were handled or the link changed

    async def connect(self, timeout_ms=5000):
        """Open the link, wait for CONNACK, start the reader; return session_present."""
        self.connect_timeout = timeout_ms
        await self._open()
        self._up = True
        self._task = asyncio.create_task(self._reader())
        return self.session_present

    async def run(self):
        """Keep the link (reconnecting) until disconnect(); without reconnect, raise the
        error that ended it."""
        if self._task is not None:
            await self._task

    async def _open(self):
        await self._close()
        t = self.connect_timeout / 1000
        self._werr = None
        try:
            ctx = host = None
            if self.ssl:  # a TLS setup error is a connect error, as in the blocking client
                from midge import tls

                ctx, host = tls.args(self)
            self._r, self._w = await asyncio.wait_for(
                asyncio.open_connection(self.server, self.port, ssl=ctx, server_hostname=host), t
            )
            self.begin(ticks_ms())
            self._out()  # CONNECT; MicroPython's connect (and TLS handshake) ends in drain()
            await asyncio.wait_for(self._w.drain(), t)
            if self._werr is not None:
                raise self._werr
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            await self._close()
            raise MQTTException(
                "cannot connect to %s:%d: %s"
                % (self.server, self.port, str(e).strip() or "timed out")
            )
        try:
            while not self.connected:
                await self._step()
        except MQTTException:
            await self._close()  # refused or timed out: the link is not left open
            raise

    async def _close(self):
        w = self._w
        if w is not None:
            self._r = self._w = None
            try:
                w.close()
                await w.wait_closed()
            except OSError:
                pass

    def _out(self):
        w = self._w
        if self._werr is None and w is not None:
            try:
                w.write(bytes(memoryview(self.out)[: self.nout]))
            except OSError as e:
                self._werr = e
        self.sent(ticks_ms())

    async def _flush(self):
        if self.nout:
            self._out()
        try:
            if self._w is not None:
                await self._w.drain()
        except (OSError, ValueError) as e:  # MicroPython's TLS handshake happens here
            self._werr = e
        if self._werr is not None:
            raise MQTTException("connection lost: %s" % str(self._werr).strip())

    async def _step(self):
        # Send what is due, read what arrives until a timer is due, handle it.
        t = self.tick(ticks_ms())
        await self._flush()
        r = self._r
        if r is None:
            raise MQTTException("not connected")
        try:
            data = await asyncio.wait_for(r.read(1024), t / 1000) if t >= 0 else await r.read(1024)
        except asyncio.TimeoutError:
            return
        except OSError as e:
            raise MQTTException("connection lost: %s" % e)
        if not data:
            raise MQTTException("broker closed the connection")
        self.receive_data(data)
        self.handle(ticks_ms())
        self._ev.set()
        await self._flush()

    async def _reader(self):
        while self._up:
            try:
                if self._w is None:
                    await asyncio.sleep(max(0, self.tick(ticks_ms())) / 1000)
                    if not self._up:
                        break
                    self.reconnects += 1
                    await self._open()
                    self._ev.set()
                else:
                    await self._step()
            except MQTTException as e:
                await self._close()
                if not self._up:
                    break
                self.last_error = str(e)
                self.lost(ticks_ms())
                self._ev.set()
                if not self.reconnect:
                    self._up = False
                    raise

    async def _until(self, pid, timeout_ms):
        # Write what is queued, then wait until packet pid is acknowledged (Session._left).
        try:
            await self._flush()
        except MQTTException as e:
            self.last_error = str(e)  # the reader sees the link gone and reconnects
        t0 = ticks_ms()
        while True:
            left = self._left(pid, timeout_ms, ticks_diff(ticks_ms(), t0))
            if not left:
                return
            if not self._up:
                raise MQTTException("not connected")
            self._ev.clear()
            try:
                await asyncio.wait_for(self._ev.wait(), left / 1000)
            except asyncio.TimeoutError:
                pass

    async def publish(self, topic, payload, qos=0, retain=False, wait=False, timeout_ms=30000):
        """As Client.publish, but written before it returns."""
        while True:
            pid = self.put(topic, payload, qos, retain)
            if pid >= 0:
                break
            await self._until(self._q[1][0], timeout_ms)  # the queue is full: the oldest goes
        await self._until(pid if wait else -1, timeout_ms)
        return pid

    async def subscribe(self, filt, qos=0, handler=None, timeout_ms=10000):
        """As Client.subscribe."""
        pid = self.sub(filt, qos, handler)
        if pid:
            await self._until(pid, timeout_ms)
            return self._granted(filt, pid)

    async def unsubscribe(self, filt, timeout_ms=10000):
        pid = self.unsub(filt)
        if pid:
            await self._until(pid, timeout_ms)

    async def disconnect(self):
        self._up = False
        self.end()
        try:
            await self._flush()
        except MQTTException:
            pass
        await self._close()
        self._ev.set()

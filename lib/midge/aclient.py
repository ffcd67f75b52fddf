# asyncio MQTT client over the same sans-I/O Session as the blocking one. connect() opens
# the link and starts one reader task; run() waits on it (it reconnects with backoff and
# ends at disconnect()). Waiting for acknowledgements is event-driven, never polled.
import asyncio

from midge import codec, topics
from midge.client import tls_context
from midge.client_core import CONNECTED, MQTTException, Session
from midge.compat import ticks_diff, ticks_ms

__all__ = ("AsyncClient", "MQTTException")


class AsyncClient:
    """Same arguments as midge.client.Client."""

    def __init__(
        self,
        client_id,
        server="127.0.0.1",
        port=1883,
        user=None,
        password=None,
        keepalive=60,
        clean_session=True,
        ssl=None,
        ssl_params=None,
        reconnect=True,
        **options,
    ):
        self.core = Session(client_id, user, password, keepalive, clean_session, **options)
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.ssl = ssl
        self.ssl_params = ssl_params or {}
        self.reconnect = reconnect
        self.last_error = None
        self.reconnects = 0
        self._r = self._w = None
        self._up = False
        self._task = None
        self._sub = None
        self._ev = asyncio.Event()  # set whenever packets were handled or the link changed

    @property
    def connected(self):
        return self.core.state == CONNECTED

    def set_will(self, topic, payload, qos=0, retain=False):
        topics.check_topic(topic)
        self.core.will = (topic, payload, qos, retain)

    def set_callback(self, fn):
        self.core.callback = fn

    async def connect(self, timeout_ms=5000):
        """Open the link, wait for CONNACK, start the reader; return session_present."""
        self.core.connect_timeout = timeout_ms
        await self._open()
        self._up = True
        self._task = asyncio.create_task(self._reader())
        return self.core.session_present

    async def run(self):
        """Keep the link (reconnecting) until disconnect(); without reconnect, raise the
        error that ended it."""
        if self._task is not None:
            await self._task

    async def _open(self):
        await self._close()
        core = self.core
        kw = {}
        if self.ssl:
            kw["ssl"] = tls_context(self.ssl, self.ssl_params)
            kw["server_hostname"] = self.ssl_params.get("server_hostname", self.server)
        try:
            self._r, self._w = await asyncio.wait_for(
                asyncio.open_connection(self.server, self.port, **kw), core.connect_timeout / 1000
            )
        except (OSError, asyncio.TimeoutError) as e:
            raise MQTTException(
                "cannot connect to %s:%d: %s" % (self.server, self.port, e or "timed out")
            )
        core.connect(ticks_ms())
        await self._flush()
        while core.state != CONNECTED:
            await self._step()

    async def _close(self):
        w = self._w
        if w is not None:
            self._r = self._w = None
            try:
                w.close()
                await w.wait_closed()
            except OSError:
                pass

    async def _step(self):
        # Read what arrives until a timer is due, handle it, run the timers, send.
        core = self.core
        t = core.timeout(ticks_ms())
        data = None
        try:
            if t < 0:
                data = await self._r.read(1024)
            else:
                data = await asyncio.wait_for(self._r.read(1024), t / 1000)
        except asyncio.TimeoutError:
            pass
        except OSError as e:
            raise MQTTException("connection lost: %s" % e)
        if data is not None:
            if not data:
                raise MQTTException("broker closed the connection")
            core.receive_data(data)
            while True:
                ev = core.next_event(ticks_ms())
                if ev is None:
                    break
                if ev.type == codec.PUBLISH:
                    core.dispatch(ev)
                elif ev.type == codec.SUBACK or ev.type == codec.UNSUBACK:
                    self._sub = ev
            self._ev.set()
        core.tick(ticks_ms())
        await self._flush()

    async def _flush(self):
        core = self.core
        try:
            while core.nout and self._w is not None:
                self._w.write(bytes(core.out[: core.nout]))
                core.sent(ticks_ms())
            if self._w is not None:
                await self._w.drain()
        except OSError as e:
            raise MQTTException("connection lost: %s" % e)

    async def _reader(self):
        core = self.core
        while self._up:
            try:
                if self._w is None:
                    await asyncio.sleep(core.retry_in(ticks_ms()) / 1000)
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
                core.lost(ticks_ms())
                self._ev.set()
                if not self.reconnect:
                    self._up = False
                    raise

    async def _wait(self, done, timeout_ms, what):
        t0 = ticks_ms()
        while not done():
            left = timeout_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                raise MQTTException("timed out waiting for %s after %d ms" % (what, timeout_ms))
            if not self._up:
                raise MQTTException("not connected")
            self._ev.clear()
            try:
                await asyncio.wait_for(self._ev.wait(), left / 1000)
            except asyncio.TimeoutError:
                pass

    async def _send(self):
        try:
            await self._flush()
        except MQTTException as e:
            self.last_error = str(e)  # the reader sees the link gone and reconnects

    async def publish(self, topic, payload, qos=0, retain=False, wait=False, timeout_ms=30000):
        """As Client.publish."""
        core = self.core
        if qos and self._w is not None:
            size = len(topic) + len(payload)
            await self._wait(
                lambda: not core.queued() or core.room(size), timeout_ms, "room in the queue"
            )
        pid = core.publish(topic, payload, qos, retain)
        await self._send()
        if wait and pid:
            await self._wait(lambda: not core.pending(pid), timeout_ms, "acknowledgement")
        return pid

    async def subscribe(self, filt, qos=0, handler=None, timeout_ms=10000):
        """As Client.subscribe."""
        pid = self.core.subscribe(filt, qos, handler)
        if not pid:
            return None
        await self._send()
        await self._wait(
            lambda: self._sub is not None and self._sub.pid == pid, timeout_ms, "SUBACK"
        )
        if self._sub.codes[0] == 0x80:
            self.core.forget(filt)
            raise MQTTException("subscription to %r refused by the broker" % filt)
        return self._sub.codes[0]

    async def unsubscribe(self, filt, timeout_ms=10000):
        pid = self.core.unsubscribe(filt)
        if pid:
            await self._send()
            await self._wait(
                lambda: self._sub is not None and self._sub.pid == pid, timeout_ms, "UNSUBACK"
            )

    async def disconnect(self):
        self._up = False
        self.core.disconnect()
        try:
            await self._flush()
        except MQTTException:
            pass
        await self._close()
        self._ev.set()

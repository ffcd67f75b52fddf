# Bridges, Mosquitto style: the broker is also a client of a remote broker (midge's own
# AsyncClient, a task in the broker's event loop). `in` topics are subscribed on the remote
# and what arrives is routed locally as if a local client had published it; local messages
# that match an `out` topic are published to the remote. Imported only when the config has a
# `connection`: a broker without bridges carries none of this.
import asyncio
import random

from midge import topics
from midge.aclient import AsyncClient, MQTTException
from midge.broker_core import INFO, WARN, Broker
from midge.broker_sess import Msg
from midge.codec import MQTTError
from midge.compat import format_exception, ticks_ms

_STATE = "$SYS/broker/connection/%s/state"
_BOOLS = ("cleansession", "notifications", "notifications_local_only", "round_robin", "try_private")
# how the client says a remote refused the CONNECT's level (CONNACK 1) or closed on it
_REFUSED = ("connection refused: unacceptable", "broker closed", "connection lost")
_QUEUE = 100  # at most this many messages in the client's queue (preallocated: 16 B each)
_ENTRY = 64  # bytes of heap a queued message costs besides its topic and payload


class Bridged(Broker):
    """The broker with bridges: every routed message is offered to each bridge."""

    bridges = ()

    def add_bridges(self, blocks):
        """blocks: brokerconf's parsed `connection` blocks."""
        self.bridges = [Bridge(self, b) for b in blocks]

    def start_bridges(self, srv):
        """Start each bridge's tasks; srv is the driver's Server (its flush() and store)."""
        for b in self.bridges:
            b.start(srv)

    def _publish(self, c, m, now):
        Broker._publish(self, c, m, now)
        for b in self.bridges:
            if b is not c:  # what a bridge brought in never goes back out over it
                b.local(m)


class _Link(AsyncClient):
    # The bridge's client. Its runner writes the acknowledgements of a batch of packets from
    # the remote only after handled() returns: by then the bridge has put on the local disk
    # what they carried (or raised, and the link closes unacknowledged).
    def __init__(self, bridge, *args, **kw):
        AsyncClient.__init__(self, *args, **kw)
        self.bridge = bridge

    def handled(self):
        self.bridge._landed()


class Bridge:
    def __init__(self, core, conf):
        self.core = core
        self.name = conf["name"]
        self.outs = []  # (local filter, local prefix, remote prefix, qos)
        self.ins = []  # (remote filter, remote prefix, local prefix, qos)
        for d, q, pat, lp, rp in conf["topics"]:
            if d != "in":
                self.outs.append((lp + pat, lp, rp, q))
            if d != "out":
                self.ins.append((rp + pat, rp, lp, q))
        cid = conf.get("remote_clientid", self.name)
        self.addrs = conf["addresses"]
        self.ai = 0  # the address in use: the next one after each failure (round robin)
        n = min(core.conf["max_queued_messages"] or _QUEUE, _QUEUE)
        c = self.client = _Link(
            self,
            cid,
            self.addrs[0][0],
            self.addrs[0][1],
            conf.get("remote_username"),
            conf.get("remote_password"),
            conf.get("keepalive_interval", 60),
            clean_session=conf.get("cleansession", False),
            reconnect=False,  # reconnected here, with restart_timeout's backoff
            max_inflight=min(core.max_inflight, 20),
            queue_count=n,
            queue_bytes=core.max_qbytes or 1 << 20,
            ssl="bridge_cafile" in conf,  # TLS, the remote verified against this CA file
            ssl_params={"cafile": conf.get("bridge_cafile")},
        )
        c.set_callback(self._remote)
        self.routed = self.acked = False  # what the batch from the remote brought: _landed()
        self.private = conf.get("try_private", True)  # Mosquitto's bridge mode: level 0x84
        self.plain = []  # the addresses that refused 0x84: level 4 there
        self.state = None
        self.remote_state = False  # notifications on the remote too (its will says 0)
        if conf.get("notifications", True):
            self.state = conf.get("notification_topic") or _STATE % cid
            self.remote_state = not conf.get("notifications_local_only")
            if self.remote_state:
                c.set_will(self.state, b"0", 1, True)
        t = conf.get("restart_timeout", (5, 30))
        self.base = t[0] * 1000
        self.cap = t[-1] * 1000
        # (remote topic, payload, qos, retain) not yet handed to the client, bounded as a
        # local client's offline queue (max_queued_messages, max_queued_bytes)
        self.q = []
        self.qbytes = self.busy = 0
        self.ev = asyncio.Event()  # set when q gets a message
        self.online = asyncio.Event()
        self.up = None  # link state: None before the first attempt
        self.dropped = 0

    def start(self, srv):
        self.srv = srv  # the driver's Server: flush() and store
        asyncio.create_task(self._link())
        asyncio.create_task(self._forward())

    def _log(self, level, msg):
        if level == WARN or self.core.verbose:
            self.core.log(level, "bridge %s: %s" % (self.name, msg))

    # ---- local -> remote

    def local(self, m):
        """A message routed locally: queued for the remote if an out topic matches."""
        t = m.topic
        for f, lp, rp, q in self.outs:
            if topics.matches(f, t):
                core = self.core
                t = rp + t[len(lp) :]
                n = _ENTRY + len(t) + len(m.payload)
                if len(self.q) + self.busy >= core.max_queued or (
                    core.max_qbytes and self.qbytes + n > core.max_qbytes
                ):
                    self._drop("bridge queue full (%d messages, %d B)" % (len(self.q), self.qbytes))
                    return
                self.q.append((t, m.payload, min(q, m.qos), m.retain))
                self.qbytes += n
                self.ev.set()
                return

    def _bug(self, e):
        self._log(WARN, "internal error (a bug in midge)\n%s" % format_exception(e))

    def _drop(self, why):
        self.dropped += 1
        self.core.dropped += 1
        if self.dropped & 1023 == 1:  # the first of every 1,024
            self._log(WARN, "message for the remote dropped (%d so far): %s" % (self.dropped, why))

    async def _forward(self):
        c = self.client
        while True:
            batch = self.q
            if not batch:
                self.ev.clear()
                await self.ev.wait()
                continue
            self.q = []
            self.busy = len(batch)  # still held here (and counted) until the client has them
            offline = False
            try:
                for t, p, q, r in batch:
                    if q or self.busy == 1:
                        # waits for room in the client's queue and writes all put() before
                        await c.publish(t, p, q, r)
                    else:
                        c.put(t, p, 0, r)  # QoS 0 into the client's output, written in one go
                    self._done(t, p)
            except MQTTException as e:
                if c.connected:  # the link is up but the remote took nothing for 30 s
                    self._drop(str(e))
                    self._done(t, p)
                else:  # the client's queue is full while the remote is away: wait for it
                    offline = True
            except Exception as e:  # a bug: loudly, and the bridge goes on
                self._bug(e)
                self._done(t, p)
            if self.busy:  # back in front of what came meanwhile
                self.q = batch[len(batch) - self.busy :] + self.q
                self.busy = 0
            if offline:
                await self.online.wait()

    def _done(self, t, p):
        self.busy -= 1
        self.qbytes -= _ENTRY + len(t) + len(p)

    # ---- remote -> local

    def _remote(self, topic, payload, p):
        for f, rp, lp, _ in self.ins:
            if topics.matches(f, topic):
                self._route(Msg(lp + topic[len(rp) :], payload, p.qos, p.retain))
                self.routed = True
                if p.qos:
                    self.acked = True
                return

    def _landed(self):
        """After each batch from the remote, before the client writes its PUBACKs/PUBRECs:
        what QoS 1/2 messages changed is in the journal and fsync'd (as a local client's
        acks are held); a journal that cannot be written (disk full) closes the link with
        nothing acknowledged, and the remote sends those messages again."""
        if not self.routed:
            return
        st = self.srv.store
        broken = False
        if st is not None:
            if self.acked:
                st.step(ticks_ms())  # append, then fsync
                broken = st.broken
            else:
                st.sync()
        self.routed = self.acked = False
        self.srv.flush()
        if broken:
            # the QoS 2 messages that got no PUBREC come again as new ones: routed again
            # (locally at least once now), never answered with a bare PUBREC meanwhile
            self.client._in2 = []
            raise MQTTException("the local journal cannot be written: nothing acknowledged")

    def _route(self, m):
        core = self.core
        core.rx_msgs += 1
        core._publish(self, m, ticks_ms())

    def _inject(self, m):
        self._route(m)
        srv = self.srv
        if srv.store is not None:
            srv.store.sync()
        srv.flush()

    # ---- the link

    async def _link(self):
        c = self.client
        for e in self.ins:  # remembered by the client: sent at every CONNACK without a session
            await c.subscribe(e[0], e[3])
        if self.state:
            self._inject(Msg(self.state, b"0", 1, True))
        d = self.base
        while True:
            try:
                if await self._session():
                    d = self.base
            except Exception as e:  # a bug: loudly, and the bridge goes on
                self._bug(e)
            self._log(INFO, "reconnecting in %d ms" % d)
            await asyncio.sleep(d / 1000)
            d = self._next(d)

    async def _session(self):
        """Connect and serve one link until it breaks; False if it could not connect."""
        c = self.client
        a = self.addrs[self.ai]
        c.proto = 0x84 if self.private and a not in self.plain else 4
        try:
            await c.connect()
        except MQTTException as e:
            w = str(e)
            if c.proto != 4 and w.startswith(_REFUSED):
                # this remote does not take a bridge (level 0x84): a plain client from now on
                self.plain.append(a)
                self._log(WARN, "%s: try_private refused, connecting as a plain client" % w)
                return await self._session()
            if self.up is not False:  # the first failure of an outage
                self._log(WARN, "%s (retrying)" % e)
            self.up = False
            self._next_address()
            return False
        self.up = True
        where = "%s:%d" % (c.server, c.port)
        self._log(WARN, "connected to %s as %s" % (where, c.client_id))
        self.online.set()
        try:
            if self.state:
                self._inject(Msg(self.state, b"1", 1, True))
            if self.remote_state:
                await c.publish(self.state, b"1", 1, True)
            await c.run()
        except MQTTException as e:
            self._log(WARN, "link to %s lost: %s" % (where, e))
            self._next_address()
        finally:
            self.online.clear()
            if self.state:
                self._inject(Msg(self.state, b"0", 1, True))
        return True

    def _next_address(self):
        a = self.addrs
        if len(a) > 1:
            self.ai = (self.ai + 1) % len(a)
            self.client.server, self.client.port = a[self.ai]

    def _next(self, d):
        # "decorrelated jitter" between base and cap (restart_timeout BASE CAP); a constant
        # restart_timeout has base == cap
        hi = min(self.cap, d * 3)
        return self.base + random.getrandbits(16) * (hi - self.base) // 65535


# ---- configuration: brokerconf hands each line of a `connection` block to option()

KEYS = (
    "address",
    "addresses",
    "topic",
    "remote_clientid",
    "remote_username",
    "remote_password",
    "keepalive_interval",
    "restart_timeout",
    "bridge_protocol_version",
    "bridge_cafile",
    "notification_topic",
) + _BOOLS


def option(b, key, v):
    """One line of bridge block b (a dict): False if key is not a bridge option; ValueError
    with the reason for a bad value."""
    if key == "connection":
        if len(v.split()) != 1:
            raise ValueError("needs one NAME, got %r" % v)
        return True
    if key not in KEYS:
        return False
    if not v:
        raise ValueError("needs a value")
    if key in _BOOLS:
        if v not in ("true", "false"):
            raise ValueError("expected true or false, got %r" % v)
        if key == "round_robin" and v == "false":
            raise ValueError("false is not supported: midge tries the addresses in turn; set true")
        b[key] = v == "true"
    elif key in ("address", "addresses"):
        _address(b, v)
    elif key == "topic":
        _topic(b, v.split())
    elif key == "notification_topic":
        try:
            topics.check_topic(v)
        except MQTTError as e:
            raise ValueError(e.reason)
        b[key] = v
    elif key == "keepalive_interval":
        b[key] = _ints(v, 1, "SECONDS (at least 5)")[0]
        if b[key] < 5:
            raise ValueError("at least 5 seconds, got %r" % v)
    elif key == "restart_timeout":
        t = b[key] = _ints(v, 2, "SECONDS or BASE CAP (whole seconds, BASE <= CAP)")
        if t[0] > t[-1]:
            raise ValueError("BASE %d is above CAP %d" % (t[0], t[1]))
    elif key == "bridge_cafile":
        try:
            open(v).close()
        except OSError as e:
            raise ValueError("cannot read %r (%s)" % (v, e))
        b[key] = v
    elif key == "bridge_protocol_version":
        if v != "mqttv311":
            raise ValueError("midge bridges speak MQTT 3.1.1 only: set mqttv311")
    else:
        b[key] = v
    return True


def check(b):
    """A whole block: ValueError saying what it lacks."""
    if "addresses" not in b:
        raise ValueError("has no `address HOST[:PORT]`")
    if not b["topics"]:
        raise ValueError("has no `topic` line")
    if "remote_password" in b and "remote_username" not in b:
        raise ValueError("has a remote_password but no remote_username")


def _ints(v, most, what):
    try:
        t = [int(w) for w in v.split()]
    except ValueError:
        t = []
    if not 1 <= len(t) <= most or min(t) < 1:
        raise ValueError("expected %s, got %r" % (what, v))
    return t


def _address(b, v):
    a = b["addresses"] = []
    for w in v.split():
        host, port = w, 1883
        if ":" in w:
            host, _, p = w.rpartition(":")
            port = int(p) if p.isdigit() else 0
        if not host or not 0 < port < 65536:
            raise ValueError("expected HOST[:PORT] ... (port 1..65535), got %r" % w)
        a.append((host, port))


def _topic(b, w):
    # topic PATTERN [out|in|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]; "" is an empty string
    n = len(w)
    if not 1 <= n <= 5 or n == 4:
        raise ValueError("expected PATTERN [out|in|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]")
    w = ["" if x == '""' else x for x in w] + [""] * (5 - n)
    pat, lp, rp = w[0], w[3], w[4]
    d = w[1] if n > 1 else "out"
    if d not in ("out", "in", "both"):
        raise ValueError("direction %r is not out, in or both" % d)
    q = w[2] if n > 2 else "0"
    if q not in ("0", "1", "2"):
        raise ValueError("QoS %r is not 0, 1 or 2" % q)
    if not pat and not (lp and rp):
        raise ValueError('an empty ("") pattern needs both a local and a remote topic')
    if "+" in lp + rp or "#" in lp + rp:
        raise ValueError("a prefix cannot hold a wildcard")
    try:
        topics.check_filter(lp + pat)
        topics.check_filter(rp + pat)
    except MQTTError as e:
        raise ValueError(e.reason)
    b["topics"].append((d, int(q), pat, lp, rp))

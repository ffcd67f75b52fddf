# Broker configuration in mosquitto.conf style: one "option value" per line, '#' comments.
# Only what midge supports is accepted; anything else is one ConfigError naming file:line.
# Also the command line and the broker's start-up: all of it is unloaded once the broker runs.
from midge import broker_core
from midge.broker_sess import is_loopback
from midge.compat import ticks_ms

_BOOL = 0
_INT = 1
_STR = 2
_TIME = 3

OPTIONS = {
    "allow_anonymous": _BOOL,
    "password_file": _STR,
    "acl_file": _STR,
    "persistence": _BOOL,
    "persistence_file": _STR,
    "persistence_location": _STR,
    "max_connections": _INT,
    "max_inflight_messages": _INT,
    "max_queued_messages": _INT,
    "max_queued_bytes": _INT,
    "max_packet_size": _INT,
    "max_retained_messages": _INT,
    "max_subscriptions": _INT,
    "retain_available": _BOOL,
    "sys_interval": _INT,
    "persistent_client_expiration": _TIME,
}

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ConfigError(Exception):
    pass


def _value(kind, v):
    if kind == _BOOL:
        if v == "true":
            return True
        if v == "false":
            return False
        raise ValueError("expected true or false, got %r" % v)
    if kind == _INT:
        try:
            n = int(v)
        except ValueError:
            raise ValueError("expected a whole number, got %r" % v)
        if n < -1:
            raise ValueError("%d is out of range" % n)
        return n
    if kind == _TIME:
        unit = v[-1:]
        mult = _UNITS.get(unit)
        num = v[:-1] if mult else v
        try:
            n = int(num)
        except ValueError:
            raise ValueError("expected a duration like 3600, 90m, 12h or 2d, got %r" % v)
        return n * (mult or 1)
    return v


def parse(text, path="<config>"):
    """Options dict from config text; 'listeners' is a list of (host, port)."""
    conf = {}
    listeners = []
    lineno = 0
    block = None  # the bridge block later bridge options belong to
    for raw in text.split("\n"):
        lineno += 1
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        parts = line.split(None, 1)
        key = parts[0]
        val = parts[1].strip() if len(parts) > 1 else ""
        where = "%s:%d" % (path, lineno)
        if key == "listener":
            words = val.split()
            if not 1 <= len(words) <= 2:
                raise ConfigError("%s: listener needs PORT [HOST], got %r" % (where, val))
            try:
                port = int(words[0])
            except ValueError:
                port = -1
            if not 0 < port < 65536:
                raise ConfigError("%s: listener port %r is not 1..65535" % (where, words[0]))
            listeners.append((words[1] if len(words) > 1 else "0.0.0.0", port))
            continue
        if key == "connection":  # a bridge block: bridge options up to the next one
            for b in conf.get("bridges", ()):
                if b["name"] == val:
                    raise ConfigError("%s: connection %s: also at %s" % (where, val, b["where"]))
            block = {"name": val, "where": where, "topics": []}
            conf.setdefault("bridges", []).append(block)
        if block is not None and _bridge(block, key, val, where):
            continue
        kind = OPTIONS.get(key)
        if kind is None:
            raise ConfigError("%s: %s" % (where, _unknown(key, block)))
        if not val:
            raise ConfigError("%s: %s needs a value" % (where, key))
        try:
            conf[key] = _value(kind, val)
        except ValueError as e:
            raise ConfigError("%s: %s: %s" % (where, key, e))
    if listeners:
        conf["listeners"] = listeners
    for b in conf.get("bridges", ()):
        _bridge(b, None, None, b["where"])
    return conf


def _bridge(block, key, val, where):
    """A bridge option (key None: the whole block) checked by bridge.py, imported only when
    the config has a `connection`: False if key is not a bridge option."""
    from midge import bridge

    try:
        if key is None:
            bridge.check(block)
            return True
        return bridge.option(block, key, val)
    except ValueError as e:
        raise ConfigError("%s: %s: %s" % (where, key or "bridge " + block["name"], e))


def _unknown(key, block):
    from midge import bridge  # an error: its import time does not matter

    if block is None and key in bridge.KEYS:
        return "%s is a bridge option: put it after a `connection NAME` line" % key
    return "unknown option %r (midge supports: listener, %s; in a bridge: connection, %s)" % (
        key,
        ", ".join(sorted(OPTIONS)),
        ", ".join(sorted(bridge.KEYS)),
    )


def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("%s: cannot read config file (%s)" % (path, e))
    return parse(text, path)


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


def setup(opts, log):
    """(core, listeners, store) from parsed options and the config file."""
    conf = load(opts["config"]) if opts["config"] else {}
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
        if auth.users is None:
            for rule in auth.rules or ():
                if rule[0] is not None:  # as Mosquitto 2: the claimed user name picks the rules
                    log(
                        broker_core.WARN,
                        "%s has `user` rules and there is no password_file: a client gets"
                        " a user's rules by sending its name" % conf["acl_file"],
                    )
                    break
    bridges = conf.pop("bridges", None)
    if bridges:
        from midge import bridge  # only then: a broker without bridges carries none of it

        core = bridge.Bridged(conf, auth, log, ticks_ms())
        core.add_bridges(bridges)
    else:
        core = broker_core.Broker(conf, auth, log, ticks_ms())
    core.verbose = opts.get("verbose", False)
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

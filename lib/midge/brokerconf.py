# Broker configuration in mosquitto.conf style: one "option value" per line, '#' comments.
# Only what midge supports is accepted; anything else is one ConfigError naming file:line.

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
        kind = OPTIONS.get(key)
        if kind is None:
            raise ConfigError(
                "%s: unknown option %r (midge supports: listener, %s)"
                % (where, key, ", ".join(sorted(OPTIONS)))
            )
        if not val:
            raise ConfigError("%s: %s needs a value" % (where, key))
        try:
            conf[key] = _value(kind, val)
        except ValueError as e:
            raise ConfigError("%s: %s: %s" % (where, key, e))
    if listeners:
        conf["listeners"] = listeners
    return conf


def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("%s: cannot read config file (%s)" % (path, e))
    return parse(text, path)

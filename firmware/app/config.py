# The provisioned board config: one JSON file, checked field by field so that a bad file
# gives one line that names the field, never a traceback. Passwords are never echoed.
import json
import sys

# Relative: the board's working directory is its flash root ("/"), on the virtual board too.
CONFIG_FILE = "config.json"
PASSWD_FILE = "passwd"  # hashed broker passwords, written by `midge provision` for the broker role
ROLES = ("sensor", "broker", "both")
KINDS = ("altitude", "temperature")
BOARDS = ("esp32", "esp32s3", "rpi-pico-w", "rpi-pico2-w", "unix")


class ConfigError(Exception):
    pass


def load(path=CONFIG_FILE):
    """Read and check the config file; return the checked dict with defaults filled in."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("no %s on the board: run `midge provision --port PORT`" % path)
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError("%s is not valid JSON: run `midge provision` again" % path)
    return check(data, path)


def check(data, where=CONFIG_FILE):
    if not isinstance(data, dict):
        raise ConfigError("%s: must be a JSON object" % where)
    out = {}
    role = _get(data, "role", str, "sensor", where)
    if role not in ROLES:
        _bad(where, "role", "sensor, broker or both", role)
    out["role"] = role
    name = _get(data, "board", str, None, where) or detect_board()
    if name not in BOARDS:
        _bad(where, "board", ", ".join(BOARDS), name)
    out["board"] = name
    # opt-in: an armed watchdog cannot be stopped, so it would also reset a board that a
    # tool interrupted (deploy, repl) a few seconds later
    out["watchdog"] = _get(data, "watchdog", bool, False, where)

    wifi = _section(data, "wifi", where)
    out["wifi"] = {
        "ssid": _get(wifi, "ssid", str, None, where, "wifi."),
        "password": _get(wifi, "password", str, None, where, "wifi."),
    }

    broker = _section(data, "broker", where)
    tls = _get(broker, "tls", bool, False, where, "broker.")
    b = {
        "host": _get(broker, "host", str, None, where, "broker."),
        "port": _get(broker, "port", int, 8883 if tls else 1883, where, "broker."),
        "user": _get(broker, "user", str, None, where, "broker."),
        "password": _get(broker, "password", str, None, where, "broker."),
        "client_id": _get(broker, "client_id", str, None, where, "broker."),
        "cafile": _get(broker, "cafile", str, None, where, "broker."),
        "tls": tls,
        # TLS without verifying the broker: only when asked for, by name
        "insecure": _get(broker, "insecure", bool, False, where, "broker."),
    }
    if tls and not b["cafile"] and not b["insecure"]:
        raise ConfigError(
            "%s: broker.tls needs broker.cafile (the CA that signed the broker's certificate), "
            "or broker.insecure: true to skip verifying the broker" % where
        )
    if not 0 < b["port"] < 65536:
        _bad(where, "broker.port", "1..65535", b["port"])
    if b["password"] is not None and b["user"] is None:
        raise ConfigError("%s: broker.password needs broker.user" % where)
    if role == "both":
        b["host"] = "127.0.0.1"  # the sensor talks to the broker on the same board
    elif role == "sensor" and not b["host"]:
        raise ConfigError("%s: broker.host is missing (role sensor)" % where)
    out["broker"] = b

    if role != "broker":
        out["sensor"] = _sensor(_section(data, "sensor", where), where)
        if not b["client_id"]:
            b["client_id"] = out["sensor"]["id"]
    return out


def _sensor(s, where):
    sid = _get(s, "id", str, None, where, "sensor.")
    if not sid:
        raise ConfigError("%s: sensor.id is missing" % where)
    for c in "/+#":
        if c in sid:
            _bad(where, "sensor.id", "a name without / + #", sid)
    interval = _get(s, "interval_ms", int, 1000, where, "sensor.")
    if interval < 100:
        _bad(where, "sensor.interval_ms", "at least 100", interval)
    qos = _get(s, "qos", int, 0, where, "sensor.")
    if qos not in (0, 1, 2):
        _bad(where, "sensor.qos", "0, 1 or 2", qos)
    kinds = _get(s, "kinds", list, list(KINDS), where, "sensor.")
    if not kinds:
        _bad(where, "sensor.kinds", "at least one of " + ", ".join(KINDS), kinds)
    for k in kinds:
        if k not in KINDS:
            _bad(where, "sensor.kinds", "a list of " + ", ".join(KINDS), k)
    return {"id": sid, "interval_ms": interval, "qos": qos, "kinds": kinds}


def _section(data, key, where):
    v = data.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConfigError("%s: %s must be a JSON object" % (where, key))
    return v


def _get(d, key, kind, default, where, prefix=""):
    v = d.get(key)
    if v is None:
        return default
    # JSON true/false are ints to isinstance(); an int field must not accept them
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise ConfigError("%s: %s%s must be %s" % (where, prefix, key, _KIND_NAMES[kind]))
    return v


_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}


def _bad(where, key, expected, got):
    raise ConfigError("%s: %s must be %s (got %r)" % (where, key, expected, got))


def detect_board():
    """The board name from the running firmware, for a config without "board"."""
    if sys.platform == "esp32":
        return "esp32s3" if "S3" in _machine() else "esp32"
    if sys.platform == "rp2":
        return "rpi-pico2-w" if "RP2350" in _machine() else "rpi-pico-w"
    return "unix"


def _machine():
    import os

    return os.uname().machine  # type: ignore[attr-defined]  (absent on the unix port only)


def board(name):
    """The BOARD dict of boards/<name>.py (deployed to the board next to the app)."""
    mod = "boards." + name.replace("-", "_")
    try:
        return __import__(mod, None, None, ["BOARD"]).BOARD
    except ImportError:
        raise ConfigError("board %s: %s.py is not on the board: run `midge deploy`" % (name, mod))


def exists(path):
    try:
        open(path).close()
        return True
    except OSError:
        return False

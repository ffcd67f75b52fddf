"""`midge provision --port P`: write the board's settings (Wi-Fi, broker, client id, user,
password, CA certificate, role) to ONE file on the board, /config.json:

  {"wifi": {"ssid", "password"},
   "broker": {"host", "port", "user", "password", "client_id", "cafile", "tls"},
   "role": "sensor" | "broker" | "both",
   "sensor": {"id", "interval_ms", "qos", "kinds": ["altitude", "temperature"]},
   "board": "<name>", "watchdog": false}

Values come from flags, then environment variables (MIDGE_WIFI_SSID, MIDGE_WIFI_PASSWORD,
MIDGE_BROKER_HOST, MIDGE_BROKER_PORT, MIDGE_BROKER_USER, MIDGE_BROKER_PASSWORD,
MIDGE_CLIENT_ID, MIDGE_SENSOR_ID, MIDGE_ROLE), then a JSON file in the format above
(--config), then a prompt (passwords through getpass, never echoed). Secrets are never printed
or logged and only touch disk as 0600 files in a private temporary folder.

The broker role (and "both") also gets /passwd (user:PBKDF2 hash from midge.auth; an entry
that already matches the password is kept, so re-provisioning changes nothing) and
/broker.conf pointing the broker at it. --cafile copies a CA certificate to /ca.pem.
Each file is written only when its sha256 differs, and read back by sha256 afterwards.
"""

import getpass
import hashlib
import importlib.util
import json
import os
import sys
import tempfile

from host_tools import mpr
from host_tools.cli import CLIError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "/config.json"
PASSWD = "/passwd"
BROKER_CONF = "/broker.conf"
CA = "/ca.pem"
FILES = (CONFIG, PASSWD, BROKER_CONF, CA)

# (flag dest, env var, path in the JSON file, kind, secret)
FIELDS = (
    ("ssid", "MIDGE_WIFI_SSID", ("wifi", "ssid"), str, False),
    ("wifi_password", "MIDGE_WIFI_PASSWORD", ("wifi", "password"), str, True),
    ("broker_host", "MIDGE_BROKER_HOST", ("broker", "host"), str, False),
    ("broker_port", "MIDGE_BROKER_PORT", ("broker", "port"), int, False),
    ("user", "MIDGE_BROKER_USER", ("broker", "user"), str, False),
    ("password", "MIDGE_BROKER_PASSWORD", ("broker", "password"), str, True),
    ("client_id", "MIDGE_CLIENT_ID", ("broker", "client_id"), str, False),
    ("tls", None, ("broker", "tls"), bool, False),
    ("role", "MIDGE_ROLE", ("role",), str, False),
    ("board", None, ("board",), str, False),
    ("watchdog", None, ("watchdog",), bool, False),
    ("sensor_id", "MIDGE_SENSOR_ID", ("sensor", "id"), str, False),
    ("interval_ms", None, ("sensor", "interval_ms"), int, False),
    ("qos", None, ("sensor", "qos"), int, False),
    ("kinds", None, ("sensor", "kinds"), list, False),
)

# Runs on the board: sha256 of each of our files, and the password file's lines.
STATE = """
import hashlib, binascii
_r = {}
for _p in FILES:
    try:
        with open(_p, 'rb') as _f:
            _d = _f.read()
    except OSError:
        continue
    _r[_p] = binascii.hexlify(hashlib.sha256(_d).digest()).decode()
    if _p == PASSWD:
        _r['passwd-lines'] = _d.decode().split()
import json
print('MIDGE-STATE ' + json.dumps(_r))
"""


def _fw_config():
    """firmware/app/config.py, the board's own checker, loaded on the host."""
    path = os.path.join(ROOT, "firmware", "app", "config.py")
    spec = importlib.util.spec_from_file_location("midge_fw_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _auth():
    lib = os.path.join(ROOT, "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    from midge import auth

    return auth


def _convert(value, kind, name):
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise CLIError("%s must be a whole number" % name) from None
    if kind is list and isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    return value


def gather(args, environ=os.environ, prompt=None):
    """The config dict from flags > environment > --config file > prompt."""
    base = {}
    if args.config:
        try:
            with open(args.config) as f:
                base = json.load(f)
        except (OSError, ValueError) as e:
            raise CLIError("%s: cannot read (%s)" % (args.config, e.__class__.__name__)) from None
        if not isinstance(base, dict):
            raise CLIError("%s: must be a JSON object" % args.config)
    cfg = {}
    for dest, env, path, kind, _ in FIELDS:
        value = getattr(args, dest, None)
        if value is None and env and environ.get(env):
            value = environ[env]
        if value is None:
            node = base
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            value = node
        if value is None:
            continue
        node = cfg
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = _convert(value, kind, "/".join(path))
    if args.cafile:
        cfg.setdefault("broker", {})["cafile"] = CA
        cfg["broker"]["tls"] = True
    if prompt is None:
        prompt = args.prompt if args.prompt is not None else sys.stdin.isatty()
    wifi, broker = cfg.get("wifi", {}), cfg.get("broker", {})
    if wifi.get("ssid") and "password" not in wifi and prompt:
        pw = getpass.getpass("Wi-Fi password for %s (empty: open network): " % wifi["ssid"])
        if pw:
            wifi["password"] = pw
    if broker.get("user") and "password" not in broker:
        if not prompt:
            raise CLIError(
                "broker password for user %s missing: set MIDGE_BROKER_PASSWORD or run in a terminal"
                % broker["user"]
            )
        broker["password"] = getpass.getpass("broker password for %s: " % broker["user"])
    return cfg


def check(cfg):
    fw = _fw_config()
    try:
        checked = fw.check(json.loads(json.dumps(cfg)), "config")
    except fw.ConfigError as e:
        raise CLIError(str(e)) from None
    if checked["role"] != "sensor" and not checked["broker"]["user"]:
        raise CLIError("role %s: the board's broker needs --user and a password" % checked["role"])
    return checked


def render(cfg):
    return (json.dumps(cfg, sort_keys=True, indent=1) + "\n").encode()


def passwd_file(user, password, old_lines):
    """The password-file bytes; an existing entry that already matches is kept (idempotent)."""
    auth = _auth()
    for line in old_lines:
        name, _, field = line.partition(":")
        if name == user and auth.verify_password(password, field):
            return (line + "\n").encode()
    return ("%s:%s\n" % (user, auth.hash_password(password))).encode()


def board_state(port, timeout):
    code = STATE.replace("FILES", repr(FILES)).replace("PASSWD", repr(PASSWD))
    out = mpr.exec_(port, code, timeout=timeout)
    for line in out.splitlines():
        if line.startswith("MIDGE-STATE "):
            return json.loads(line[len("MIDGE-STATE ") :])
    raise CLIError("%s: unexpected answer from the board" % port)


def _summary(cfg):
    b = cfg.get("broker", {})
    parts = ["role %s" % cfg["role"]]
    if cfg.get("wifi", {}).get("ssid"):
        parts.append("wifi %s" % cfg["wifi"]["ssid"])
    if b.get("host"):
        parts.append(
            "broker %s:%s%s" % (b["host"], b.get("port", 1883), " tls" if b.get("tls") else "")
        )
    if b.get("user"):
        parts.append("user %s" % b["user"])
    if cfg.get("sensor"):
        parts.append("sensor %s" % cfg["sensor"]["id"])
    return ", ".join(parts)


def add_arguments(p):
    p.add_argument("--port", required=True, help="serial port or socket://HOST:PORT of the board")
    p.add_argument("--config", help="JSON file in the /config.json format (may hold the secrets)")
    p.add_argument("--role", choices=("sensor", "broker", "both"))
    p.add_argument(
        "--board", help="board name written to the config (default: detected on the board)"
    )
    p.add_argument("--ssid", help="Wi-Fi network")
    p.add_argument(
        "--wifi-password",
        help="Wi-Fi password (visible in ps: prefer MIDGE_WIFI_PASSWORD or the prompt)",
    )
    p.add_argument("--broker-host", help="broker the sensor publishes to")
    p.add_argument("--broker-port", type=int, help="broker port (1883, 8883 with TLS)")
    p.add_argument("--user", help="broker user name")
    p.add_argument(
        "--password",
        help="broker password (visible in ps: prefer MIDGE_BROKER_PASSWORD or the prompt)",
    )
    p.add_argument("--client-id", help="MQTT client id (default: the sensor id)")
    p.add_argument("--cafile", help="CA certificate (PEM) to copy to the board; turns TLS on")
    p.add_argument("--tls", action="store_true", default=None, help="connect with TLS")
    p.add_argument("--watchdog", action="store_true", default=None, help="arm the board's watchdog")
    p.add_argument("--id", dest="sensor_id", help="sensor id: topics sensors/<id>/...")
    p.add_argument("--interval-ms", type=int, help="time between readings (default 1000)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), help="QoS of the readings (default 0)")
    p.add_argument("--kinds", help="comma-separated: altitude,temperature (default both)")
    p.add_argument("--prompt", action="store_true", default=None, help="ask for missing passwords")
    p.add_argument("--no-prompt", dest="prompt", action="store_false", help="never ask")
    p.add_argument(
        "--reset", action="store_true", help="hard-reset the board afterwards (runs main.py)"
    )
    p.add_argument("--timeout", type=float, default=60, help="seconds per mpremote session (60)")


def run(args):
    cfg = gather(args)
    checked = check(cfg)
    files = {CONFIG: render(cfg)}
    if args.cafile:
        try:
            with open(args.cafile, "rb") as f:
                ca = f.read()
        except OSError as e:
            raise CLIError("%s: cannot read (%s)" % (args.cafile, e.strerror)) from None
        if b"-----BEGIN CERTIFICATE-----" not in ca and ca[:1] != b"\x30":
            raise CLIError("%s: not a PEM or DER certificate" % args.cafile)
        files[CA] = ca
    state = board_state(args.port, args.timeout)
    if checked["role"] != "sensor":
        b = checked["broker"]
        files[PASSWD] = passwd_file(b["user"], b["password"], state.get("passwd-lines", []))
        files[BROKER_CONF] = b"password_file passwd\nallow_anonymous false\n"
    want = {p: hashlib.sha256(data).hexdigest() for p, data in files.items()}
    todo = sorted(p for p in files if state.get(p) != want[p])
    print("provision: %s" % _summary(checked))
    if todo:
        with tempfile.TemporaryDirectory(prefix="midge-provision-") as tmp:
            cmd = []
            for p in todo:
                local = os.path.join(tmp, p.strip("/"))
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(files[p])
                cmd += ["fs", "cp", local, ":" + p, "+"]
            code = STATE.replace("FILES", repr(FILES)).replace("PASSWD", repr("-"))
            out = mpr.run(args.port, *cmd, "exec", code, timeout=args.timeout)
        after = {}
        for line in out.splitlines():
            if line.startswith("MIDGE-STATE "):
                after = json.loads(line[len("MIDGE-STATE ") :])
        bad = [p for p in todo if after.get(p) != want[p]]
        if bad:
            raise CLIError("read-back sha256 differs for %s" % ", ".join(bad))
    for p in sorted(files):
        print("%s: %s" % (p, "written, sha256 verified" if p in todo else "unchanged"))
    if args.reset:
        mpr.run(args.port, "reset", timeout=args.timeout)
    return 0

# The virtual board's `network` module: WLAN "joins" at once and the board's address is the
# host loopback, so MQTT code on the virtual board reaches brokers on 127.0.0.1.
# MIDGE_VBOARD_WIFI="ssid=password;ssid2=password2" limits which networks exist (default: any).
import os

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_GOT_IP = 3
STAT_CONNECT_FAIL = -1
STAT_NO_AP_FOUND = -2
STAT_WRONG_PASSWORD = -3

_hostname = ["midge-vboard"]


def _networks():
    spec = os.getenv("MIDGE_VBOARD_WIFI")
    if not spec:
        return None
    nets = {}
    for item in spec.split(";"):
        if "=" in item:
            ssid, pw = item.split("=", 1)
            nets[ssid] = pw
    return nets


def hostname(name=None):
    if name is None:
        return _hostname[0]
    _hostname[0] = name


def country(code=None):
    return "XX"


class WLAN:
    _ifaces = {}

    def __init__(self, interface=STA_IF):
        self.interface = interface
        self.s = WLAN._ifaces.setdefault(interface, {"active": False, "status": STAT_IDLE})

    def active(self, on=None):
        if on is None:
            return self.s["active"]
        self.s["active"] = bool(on)
        if not on:
            self.s["status"] = STAT_IDLE

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self.s["active"]:
            raise OSError("WLAN not active")
        nets = _networks()
        if nets is not None and ssid not in nets:
            self.s["status"] = STAT_NO_AP_FOUND
        elif nets is not None and nets[ssid] != (key or ""):
            self.s["status"] = STAT_WRONG_PASSWORD
        else:
            self.s["status"] = STAT_GOT_IP
            self.s["ssid"] = ssid

    def disconnect(self):
        self.s["status"] = STAT_IDLE

    def isconnected(self):
        return self.s["status"] == STAT_GOT_IP

    def status(self, param=None):
        if param == "rssi":
            return -50
        return self.s["status"]

    def ifconfig(self, cfg=None):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def ipconfig(self, key):
        return ("127.0.0.1", "255.0.0.0") if key == "addr4" else None

    def config(self, *args, **kw):
        if args and args[0] == "mac":
            return b"\x02\x00\x00\x00\x00\x01"
        if args and args[0] == "ssid":
            return self.s.get("ssid", "")
        return None

    def scan(self):
        nets = _networks() or {"midge-vboard": ""}
        return [(s.encode(), b"\x02\x00\x00\x00\x00\x02", 6, -50, 3, False) for s in nets]

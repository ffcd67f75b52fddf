# The board app's pure parts on both runtimes: config checking, board definitions, the
# drone's schedule and readings, the Wi-Fi backoff.
import json
import sys

import support

_ROOT = (__file__.rsplit("/", 1)[0] if "/" in __file__ else ".") + "/.."
for _p in (_ROOT, _ROOT + "/firmware"):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from app import config, net  # noqa: E402
from app.drone import Drone, Noise, altitude_at  # noqa: E402

GOOD = {
    "wifi": {"ssid": "hangar", "password": "pw"},
    "broker": {"host": "10.0.0.2", "port": 1883, "user": "drone", "password": "secret"},
    "role": "sensor",
    "sensor": {"id": "drone01", "interval_ms": 500, "qos": 1, "kinds": ["altitude"]},
    "board": "esp32",
}


def _copy(d):
    return json.loads(json.dumps(d))


def _error(data):
    return str(support.raises(config.ConfigError, config.check, data))


def test_config_good_fills_defaults():
    cfg = config.check(_copy(GOOD))
    assert cfg["role"] == "sensor" and cfg["board"] == "esp32"
    assert cfg["broker"]["client_id"] == "drone01"  # defaults to the sensor id
    assert cfg["broker"]["tls"] is False and cfg["broker"]["cafile"] is None
    assert cfg["sensor"] == {"id": "drone01", "interval_ms": 500, "qos": 1, "kinds": ["altitude"]}
    assert cfg["watchdog"] is False
    minimal = config.check({"broker": {"host": "h"}, "sensor": {"id": "d"}, "board": "unix"})
    assert minimal["sensor"]["kinds"] == ["altitude", "temperature"]
    assert minimal["sensor"]["qos"] == 0 and minimal["sensor"]["interval_ms"] == 1000
    assert minimal["broker"]["port"] == 1883
    tls = config.check(
        {"broker": {"host": "h", "tls": True, "cafile": "/ca.pem"}, "sensor": {"id": "d"}}
    )
    assert tls["broker"]["port"] == 8883 and tls["broker"]["insecure"] is False
    # TLS without verifying the broker only by name
    tls = config.check(
        {"broker": {"host": "h", "tls": True, "insecure": True}, "sensor": {"id": "d"}}
    )
    assert tls["broker"]["insecure"] is True and tls["broker"]["cafile"] is None


def test_config_roles():
    both = _copy(GOOD)
    both["role"] = "both"
    assert config.check(both)["broker"]["host"] == "127.0.0.1"
    broker = {"role": "broker", "broker": {"port": 1884}, "board": "rpi-pico-w"}
    cfg = config.check(broker)
    assert "sensor" not in cfg and cfg["broker"]["port"] == 1884


def test_config_errors_are_one_line_naming_the_field():
    cases = [
        ([], "must be a JSON object"),
        ({"role": "drone"}, "role must be sensor, broker or both (got 'drone')"),
        ({"board": "esp8266"}, "board must be esp32"),
        (
            {"broker": {"host": "h", "port": "1883"}, "sensor": {"id": "d"}},
            "broker.port must be an integer",
        ),
        (
            {"broker": {"host": "h", "port": True}, "sensor": {"id": "d"}},
            "broker.port must be an integer",
        ),
        (
            {"broker": {"host": "h", "port": 70000}, "sensor": {"id": "d"}},
            "broker.port must be 1..65535",
        ),
        (
            {"broker": {"host": "h", "password": "x"}, "sensor": {"id": "d"}},
            "broker.password needs broker.user",
        ),
        ({"sensor": {"id": "d"}}, "broker.host is missing"),
        ({"broker": {"host": "h"}}, "sensor.id is missing"),
        ({"broker": {"host": "h"}, "sensor": {"id": "a/b"}}, "sensor.id must be a name without"),
        (
            {"broker": {"host": "h"}, "sensor": {"id": "d", "qos": 3}},
            "sensor.qos must be 0, 1 or 2",
        ),
        ({"broker": {"host": "h"}, "sensor": {"id": "d", "interval_ms": 5}}, "at least 100"),
        ({"broker": {"host": "h"}, "sensor": {"id": "d", "kinds": ["wind"]}}, "got 'wind'"),
        ({"broker": {"host": "h"}, "sensor": {"id": "d", "kinds": []}}, "sensor.kinds must be"),
        ({"broker": "h", "sensor": {"id": "d"}}, "broker must be a JSON object"),
        ({"wifi": {"ssid": 5}}, "wifi.ssid must be a string"),
        ({"watchdog": 1}, "watchdog must be true or false"),
        (
            {"broker": {"host": "h", "tls": True}, "sensor": {"id": "d"}},
            "broker.tls needs broker.cafile (the CA that signed the broker's certificate), "
            "or broker.insecure: true to skip verifying the broker",
        ),
        (
            {"broker": {"host": "h", "tls": True, "insecure": 1}, "sensor": {"id": "d"}},
            "broker.insecure must be true or false",
        ),
    ]
    for data, want in cases:
        msg = _error(data)
        assert want in msg, (data, msg)
        assert "\n" not in msg and msg.startswith("config.json: ")


def test_config_errors_never_show_passwords():
    data = _copy(GOOD)
    data["sensor"]["qos"] = 9
    data["wifi"]["password"] = "wifi-secret-1"
    assert "secret" not in _error(data)
    data = _copy(GOOD)
    data["broker"]["password"] = ["broker-secret-2"]
    msg = _error(data)
    assert "broker.password must be a string" in msg and "secret" not in msg


def test_config_load_missing_and_broken_files():
    d = support.tmpdir()
    msg = str(support.raises(config.ConfigError, config.load, d + "/config.json"))
    assert "no %s/config.json on the board" % d in msg and "midge provision" in msg
    with open(d + "/bad.json", "w") as f:
        f.write('{"role": "sensor",')
    msg = str(support.raises(config.ConfigError, config.load, d + "/bad.json"))
    assert "bad.json is not valid JSON" in msg
    with open(d + "/good.json", "w") as f:
        json.dump(GOOD, f)
    assert config.load(d + "/good.json")["sensor"]["id"] == "drone01"


def test_boards_load_on_the_board_runtime():
    for name in config.BOARDS:
        b = config.board(name)
        assert b["name"] == name
        assert b["format"] in ("esptool", "uf2", "none")
        assert b["mpy_arch"] in ("xtensawin", "armv6m", "armv7emsp", None)
        assert (b["format"] == "uf2") == (b["uf2_family"] is not None)
        assert b["heap"] >= 64 * 1024 and b["flash_size"] >= 1024 * 1024
    assert config.board("esp32")["flash_offset"] == 0x1000
    assert config.board("esp32s3")["flash_offset"] == 0
    assert config.board("rpi-pico-w")["uf2_family"] == 0xE48BFF56
    assert config.board("rpi-pico2-w")["uf2_family"] == 0xE48BFF59
    assert config.board("unix")["wifi"] is False
    msg = str(support.raises(config.ConfigError, config.board, "nope"))
    assert "boards.nope.py is not on the board" in msg


def test_detect_board_here_is_unix():
    assert config.detect_board() == "unix"
    assert config.check({"broker": {"host": "h"}, "sensor": {"id": "d"}})["board"] == "unix"


def test_drone_schedule_keeps_cadence_and_skips_after_a_stall():
    d = Drone("drone01", ["altitude", "temperature"], 1000, now=5000)
    assert d.wait_ms(5000) == 0
    first = d.poll(5000)
    assert [t for t, _ in first] == ["sensors/drone01/altitude", "sensors/drone01/temperature"]
    assert d.poll(5001) == [] and d.wait_ms(5001) == 999
    assert len(d.poll(6010)) == 2  # 10 ms late: the next one is still due at 7000
    assert d.wait_ms(6010) == 990
    assert len(d.poll(30000)) == 2  # a long stall: no burst of catch-up readings
    assert d.poll(30500) == [] and d.wait_ms(30000) == 1000
    assert d.status_topic == "sensors/drone01/status"


def test_drone_readings_are_plausible_numbers():
    d = Drone("drone40", ["temperature", "altitude"], 100, now=0)
    for i in range(1300):  # a whole simulated flight
        for topic, payload in d.poll(i * 100):
            v = float(payload)
            assert payload == ("%.1f" % v).encode()
            if topic.endswith("altitude"):
                assert 0.0 <= v <= 110.0, v
            else:
                assert 17.0 < v < 25.0, v
    assert altitude_at(0) == 0.0 and altitude_at(20000) == 100.0 and altitude_at(120000) == 0.0


def test_drone_board_source_replaces_the_simulation():
    d = Drone("d1", ["temperature"], 100, now=0, sources={"temperature": lambda t: 36.6})
    assert d.poll(0) == [("sensors/d1/temperature", b"36.6")]


def test_drone_noise_is_deterministic_per_id():
    a = [Drone("drone01", ["altitude"], 100, 0).poll(40000) for _ in range(2)]
    b = Drone("drone02", ["altitude"], 100, 0).poll(40000)
    assert a[0] == a[1] and a[0] != b
    n = Noise(7)
    lo = hi = 0.0
    for _ in range(1000):
        v = n.next(1.0)
        lo, hi = min(lo, v), max(hi, v)
    assert -1.0 <= lo < -0.9 and 0.9 < hi < 1.0


def test_wifi_backoff_grows_and_is_capped():
    assert [net.backoff_ms(i) for i in range(6)] == [1000, 2000, 4000, 8000, 16000, 16000]
    total = sum(net.backoff_ms(i) for i in range(net.ATTEMPTS - 1))
    assert total + net.ATTEMPTS * net.ATTEMPT_MS < 120000  # gives up within two minutes


def test_wifi_join_needs_an_ssid():
    msg = str(support.raises(net.WifiError, net.join, None, None))
    assert "wifi.ssid is missing" in msg

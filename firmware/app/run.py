# The board's main program: config -> Wi-Fi -> the role. The sensor role is one blocking
# loop on the polling client; the broker roles run on asyncio (app/hub.py).
from midge.compat import sleep_ms, ticks_ms

from app import config, hw, net
from app.drone import Drone


class AppError(Exception):
    pass


def main(path=config.CONFIG_FILE):
    """Entry point of main.py. Returns (to the REPL) when the board cannot run the app."""
    try:
        cfg = config.load(path)
        board = config.board(cfg["board"])
    except config.ConfigError as e:
        return idle(e)
    led = hw.Led(board)
    print("midge: board %s, role %s" % (board["name"], cfg["role"]))
    if board["wifi"]:
        led.set(1)
        try:
            print(
                "midge: wifi up, address %s"
                % net.join(cfg["wifi"]["ssid"], cfg["wifi"]["password"])
            )
        except net.WifiError as e:
            return idle(e)
    wdt = hw.watchdog(board) if cfg["watchdog"] else None
    try:
        if cfg["role"] == "sensor":
            fly(cfg, board, led, wdt)
        else:
            from app import hub

            hub.main(cfg, board, led, wdt)
    except AppError as e:
        return idle(e)
    except KeyboardInterrupt:
        if wdt:
            print("midge: stopped; the watchdog stays armed: reset in %d ms" % board["watchdog_ms"])
        raise


def idle(why):
    print("midge: %s" % why)
    print("midge: idle, REPL free")


def client_for(cfg, drone, cls):
    b = cfg["broker"]
    c = cls(
        b["client_id"],
        b["host"],
        b["port"],
        user=b["user"],
        password=b["password"],
        keepalive=30,
        ssl=b["tls"],
        # cert_reqs 0 is ssl.CERT_NONE, 2 CERT_REQUIRED: config.py allows 0 only by name
        ssl_params={"cafile": b["cafile"], "cert_reqs": 0 if b["insecure"] else 2},
    )
    c.set_will(drone.status_topic, b"offline", qos=1, retain=True)
    return c


def new_drone(cfg, board):
    s = cfg["sensor"]
    return Drone(s["id"], s["kinds"], s["interval_ms"], ticks_ms(), hw.sensor_sources(board))


class Link:
    """Reports connection changes once each; after every (re)connect the drone says
    "online" (retained) again, since the broker may have published its will meanwhile.
    Readings the client could not queue while offline are counted and reported then."""

    def __init__(self, cfg):
        self.where = "%s:%d" % (cfg["broker"]["host"], cfg["broker"]["port"])
        self.up = False
        self.dropped = 0

    def changed(self, connected):
        if connected == self.up:
            return False
        self.up = connected
        print("midge: %s %s" % ("connected to" if connected else "lost", self.where))
        if connected and self.dropped:
            print("midge: %d readings dropped while offline (queue full)" % self.dropped)
            self.dropped = 0
        return connected


def fly(cfg, board, led, wdt=None):
    """The sensor role on the blocking client: one loop, no event loop needed."""
    from midge.client import Client, MQTTException

    drone = new_drone(cfg, board)
    client = client_for(cfg, drone, Client)
    link = Link(cfg)
    qos = cfg["sensor"]["qos"]
    step = board["watchdog_ms"] // 4 if wdt else 16000  # longest wait between feeds
    tries = 0
    while True:  # the first connect; after it the client reconnects by itself
        try:
            client.connect()
            break
        except MQTTException as e:
            print("midge: %s" % e)
            sleep_ms(min(step, net.backoff_ms(tries)))  # an armed watchdog bounds the pause
            tries += 1
            if wdt:
                wdt.feed()
    while True:
        if link.changed(client.connected):
            client.publish(drone.status_topic, b"online", qos=1, retain=True)
        readings = drone.poll(ticks_ms())
        for topic, payload in readings:
            try:
                client.publish(topic, payload, qos=qos)
            except MQTTException:  # offline with a full queue (QoS 1/2 are never dropped)
                link.dropped += 1
        if readings:
            led.toggle()
        if wdt:
            wdt.feed()
        client.loop(min(step, drone.wait_ms(ticks_ms())))

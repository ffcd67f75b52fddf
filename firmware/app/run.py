# The board's main loop: config -> Wi-Fi -> the role(s), all on one asyncio loop.
import asyncio

from midge.compat import ticks_ms

from app import config, hw, net
from app.drone import Drone

BROKER_CONF = "broker.conf"  # mosquitto.conf-style options for the broker role (optional)


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
        asyncio.run(run(cfg, board, led, wdt))
    except AppError as e:
        return idle(e)
    except KeyboardInterrupt:
        if wdt:
            print("midge: stopped; the watchdog stays armed: reset in %d ms" % board["watchdog_ms"])
        raise


def idle(why):
    print("midge: %s" % why)
    print("midge: idle, REPL free")


async def run(cfg, board, led, wdt=None):
    jobs = []
    if wdt:
        jobs.append(feed(wdt, board["watchdog_ms"] // 4))
    if cfg["role"] in ("broker", "both"):
        jobs.append(serve_broker(cfg, board))
    if cfg["role"] in ("sensor", "both"):
        jobs.append(fly(cfg, board, led))
    await asyncio.gather(*jobs)


async def feed(wdt, period_ms):
    # fed from the event loop: a blocked loop (stuck driver, deadlock) lets it reset the board
    while True:
        wdt.feed()
        await asyncio.sleep(period_ms / 1000)


async def serve_broker(cfg, board):
    from midge import broker

    # a board serves its Wi-Fi network; the virtual board only the host's loopback
    host = "0.0.0.0" if board["wifi"] else "127.0.0.1"
    opts = {"host": host, "port": cfg["broker"]["port"], "config": None, "verbose": False}
    if config.exists(BROKER_CONF):
        opts["config"] = BROKER_CONF
    try:
        core, listeners, store = broker.setup(opts, broker.make_log(False))
    except Exception as e:  # the broker's ConfigError/AuthError/UsageError: one line each
        raise AppError("broker: %s" % e)
    await broker.serve(core, listeners, store, lambda ls: broker.announce(ls, "board"))


async def fly(cfg, board, led):
    from midge.aclient import AsyncClient

    s, b = cfg["sensor"], cfg["broker"]
    drone = Drone(s["id"], s["kinds"], s["interval_ms"], ticks_ms(), hw.sensor_sources(board))
    client = AsyncClient(
        b["client_id"],
        b["host"],
        b["port"],
        user=b["user"],
        password=b["password"],
        keepalive=30,
        ssl=b["tls"],
        ssl_params={"cafile": b["cafile"]} if b["cafile"] else None,
    )
    client.set_will(drone.status_topic, b"offline", qos=1, retain=True)
    asyncio.create_task(client.run())  # connects, keeps the link, reconnects with backoff
    online = False
    while True:
        if client.connected != online:
            online = client.connected
            print("midge: %s %s:%d" % ("connected to" if online else "lost", b["host"], b["port"]))
            if online:  # after every (re)connect: the will may have said offline meanwhile
                await client.publish(drone.status_topic, b"online", qos=1, retain=True)
        readings = drone.poll(ticks_ms())
        for topic, payload in readings:
            await client.publish(topic, payload, qos=s["qos"])
        if readings:
            led.toggle()
        await asyncio.sleep(drone.wait_ms(ticks_ms()) / 1000)

# The broker roles on one asyncio loop: midge's broker, the watchdog feeder and, for role
# both, a drone on the asyncio client that publishes to the broker over 127.0.0.1.
import asyncio

from midge.compat import ticks_ms

from app import config
from app.net import backoff_ms
from app.run import AppError, Link, client_for, new_drone

BROKER_CONF = "broker.conf"  # mosquitto.conf-style options for the broker role (optional)


def main(cfg, board, led, wdt=None):
    asyncio.run(run(cfg, board, led, wdt))


async def run(cfg, board, led, wdt=None):
    """The broker role, and for role both a drone on the same loop."""
    jobs = [serve_broker(cfg, board)]
    if wdt:
        jobs.append(feed(wdt, board["watchdog_ms"] // 4))
    if cfg["role"] == "both":
        jobs.append(fly_async(cfg, board, led))
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


async def fly_async(cfg, board, led):
    """The drone of role both, on the asyncio client next to the broker."""
    from midge.aclient import AsyncClient, MQTTException

    drone = new_drone(cfg, board)
    client = client_for(cfg, drone, AsyncClient)
    link = Link(cfg)
    qos = cfg["sensor"]["qos"]
    tries = 0
    while True:  # the first connect; after it the client's reader task reconnects
        try:
            await client.connect()
            break
        except MQTTException as e:
            print("midge: %s" % e)
            await asyncio.sleep(backoff_ms(tries) / 1000)
            tries += 1
    while True:
        if link.changed(client.connected):
            await client.publish(drone.status_topic, b"online", qos=1, retain=True)
        readings = drone.poll(ticks_ms())
        for topic, payload in readings:
            try:
                await client.publish(topic, payload, qos=qos)
            except MQTTException:  # offline with a full queue
                link.dropped += 1
        if readings:
            led.toggle()
        await asyncio.sleep(drone.wait_ms(ticks_ms()) / 1000)

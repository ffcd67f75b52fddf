"""`midge broker`: run midge's MQTT broker on CPython (the asyncio Protocol driver).

Same options as `python -m midge.broker` and the MicroPython build; the config file uses
mosquitto.conf syntax for what midge supports (see README, section broker).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_arguments(p):
    p.add_argument(
        "--host", help="address to listen on (default 127.0.0.1, or the config's listener)"
    )
    p.add_argument("--port", type=int, help="TCP port (default 1883, or the config's listener)")
    p.add_argument("-c", "--config", help="mosquitto.conf-style config file")
    p.add_argument("-v", "--verbose", action="store_true", help="log every connect and disconnect")


def run(args):
    lib = os.path.join(ROOT, "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    from midge import broker_fast

    argv = []
    if args.host:
        argv += ["--host", args.host]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    if args.config:
        argv += ["--config", args.config]
    if args.verbose:
        argv.append("-v")
    return broker_fast.main(argv)

"""The `midge` command line. Each subcommand lives in its own module with
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when used."""

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "broker": ("host_tools.broker_cmd", "run midge's MQTT broker (same as python -m midge.broker)"),
    "passwd": (
        "host_tools.passwd",
        "create or update a broker password file (like mosquitto_passwd)",
    ),
    "pub": ("host_tools.pubsub", "publish a message (like mosquitto_pub)"),
    "sub": ("host_tools.pubsub", "subscribe and print messages (like mosquitto_sub)"),
    "monitor": ("host_tools.monitor", "publish/subscribe round-trip timing against a broker"),
    "flash": ("host_tools.flash", "write MicroPython firmware to a board (esptool or UF2)"),
    "deploy": ("host_tools.deploy", "copy lib/midge and the app to a board, only what changed"),
    "provision": ("host_tools.provision", "write Wi-Fi, broker and role settings to a board"),
    "repl": ("host_tools.repl", "open the board's serial REPL"),
    "test": ("host_tools.boardtest", "run the test suite on a board through its REPL"),
    "vboard": ("host_tools.vboard", "run a virtual board: MicroPython behind a pty or TCP port"),
    "bench": ("host_tools.bench", "run the benchmarks and write bench/results.md"),
    "demo": ("host_tools.demo", "the drone demo: broker on MicroPython, two virtual drones"),
}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def build_parser():
    p = argparse.ArgumentParser(prog="midge", description="midge: tiny MQTT for boards and desktop")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(_module=modname)
        mod = _load(modname)
        if mod is not None:
            adder = getattr(mod, "add_arguments_" + name, None) or mod.add_arguments
            adder(sp)
    return p


def _load(modname):
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name == modname:
            return None  # command not built yet
        raise


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    mod = _load(args._module)
    if mod is None:
        print("midge %s: not available in this build" % args.command, file=sys.stderr)
        return 2
    runner = getattr(mod, "run_" + args.command, None) or mod.run
    try:
        return runner(args) or 0
    except CLIError as e:
        print("midge %s: %s" % (args.command, e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

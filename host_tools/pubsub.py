"""`midge pub` and `midge sub`: mosquitto_pub / mosquitto_sub with the same short flags,
on midge's own client."""

import os
import sys
import time

from midge.client import Client, MQTTException
from midge.codec import MQTTError

from host_tools.cli import CLIError


def _common(p):
    # -h is the host, as in mosquitto_pub/sub (--help stays): a group made after switching
    # the parser to "resolve" takes -h from the help action.
    p.conflict_handler = "resolve"
    p = p.add_argument_group("broker and message")
    p.add_argument("-h", "--host", default="localhost", help="broker host (default localhost)")
    p.add_argument("-p", "--port", type=int, default=0, help="broker port (1883, 8883 with TLS)")
    p.add_argument(
        "-t", "--topic", action="append", default=[], help="topic (sub: filter; repeatable)"
    )
    p.add_argument("-q", "--qos", type=int, default=0, choices=(0, 1, 2), help="QoS (default 0)")
    p.add_argument("-i", "--id", help="client id (default midge-pub-/midge-sub-<pid>)")
    p.add_argument("-u", "--username")
    p.add_argument(
        "-P", "--pw", help="password (or set MIDGE_MQTT_PASSWORD to keep it out of `ps`)"
    )
    p.add_argument("-k", "--keepalive", type=int, default=60, help="keepalive seconds (default 60)")
    p.add_argument("-c", "--disable-clean-session", action="store_true", help="keep the session")
    p.add_argument("--cafile", help="CA certificate file: use TLS and verify the broker with it")
    p.add_argument("--tls", action="store_true", help="TLS with the system's CA store")
    p.add_argument("--will-topic")
    p.add_argument("--will-payload", default="")
    p.add_argument("--will-qos", type=int, default=0, choices=(0, 1, 2))
    p.add_argument("--will-retain", action="store_true")
    p.add_argument("--timeout", type=float, default=5, help="connect timeout in seconds")


def add_arguments_pub(p):
    _common(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("-m", "--message", help="payload")
    src.add_argument("-f", "--file", help="send this file as the payload")
    src.add_argument("-s", "--stdin-file", action="store_true", help="send all of stdin")
    src.add_argument("-l", "--stdin-line", action="store_true", help="one message per stdin line")
    src.add_argument("-n", "--null-message", action="store_true", help="empty payload")
    p.add_argument("-r", "--retain", action="store_true", help="retain the message")
    p.add_argument("-d", "--debug", action="store_true", help="print what happens")


def add_arguments_sub(p):
    _common(p)
    p.add_argument("-v", "--verbose", action="store_true", help="print 'topic payload'")
    p.add_argument("-C", "--count", type=int, default=0, help="exit after this many messages")
    p.add_argument("-W", "--wait", type=float, default=0, help="exit after this many seconds")
    p.add_argument("-N", "--no-newline", action="store_true", help="no newline after a payload")
    p.add_argument("-R", "--no-retained", action="store_true", help="skip retained messages")


def make_client(args, client_id, reconnect):
    """A Client from the shared connection flags, checked first (one-line errors)."""
    password = args.pw if args.pw is not None else os.environ.get("MIDGE_MQTT_PASSWORD")
    if password is not None and args.username is None:
        raise CLIError("a password (-P) needs a username (-u)")
    ssl, params = None, {}
    if args.cafile:
        if not os.path.isfile(args.cafile):
            raise CLIError("--cafile %s: no such file" % args.cafile)
        ssl, params = True, {"cafile": args.cafile}
    elif args.tls:
        ssl = True
    return Client(
        client_id,
        args.host,
        args.port or (8883 if ssl else 1883),
        args.username,
        password.encode() if password is not None else None,
        args.keepalive,
        not args.disable_clean_session,
        ssl,
        params,
        reconnect=reconnect,
    )


def connect(c, args):
    try:
        c.connect(int(args.timeout * 1000))
    except MQTTException as e:
        raise CLIError(str(e)) from None
    except (ValueError, MQTTError) as e:  # an invalid will topic and the like
        raise CLIError(str(e)) from None


def _client(args, kind, callback=None):
    if not args.topic:
        raise CLIError("a topic is needed (-t)")
    c = make_client(args, args.id or "midge-%s-%d" % (kind, os.getpid()), kind == "sub")
    if callback:  # before connect: a kept session's queued messages come with the CONNACK
        c.set_callback(callback)
    if args.will_topic:
        c.set_will(args.will_topic, args.will_payload.encode(), args.will_qos, args.will_retain)
    connect(c, args)
    return c


def _payloads(args):
    if args.message is not None:
        yield args.message.encode()
    elif args.file:
        try:
            with open(args.file, "rb") as f:
                yield f.read()
        except OSError as e:
            raise CLIError("cannot read %s: %s" % (args.file, e.strerror)) from None
    elif args.stdin_file:
        yield sys.stdin.buffer.read()
    elif args.stdin_line:
        for line in sys.stdin.buffer:
            yield line.rstrip(b"\r\n")
    elif args.null_message:
        yield b""
    else:
        raise CLIError("a payload is needed: -m, -f, -s, -l or -n")


def run_pub(args):
    if len(args.topic) > 1:
        raise CLIError("pub takes one topic (-t)")
    payloads = _payloads(args)
    c = _client(args, "pub")
    topic = args.topic[0]
    try:
        for payload in payloads:
            c.publish(topic, payload, args.qos, args.retain, wait=True)
            if args.debug:
                print(
                    "sent %d bytes to %s (QoS %d)" % (len(payload), topic, args.qos),
                    file=sys.stderr,
                )
    except MQTTException as e:
        raise CLIError(str(e)) from None
    except (ValueError, MQTTError) as e:  # a bad topic
        raise CLIError(str(e)) from None
    finally:
        c.disconnect()
    return 0


def run_sub(args):
    out = sys.stdout.buffer
    end = b"" if args.no_newline else b"\n"
    seen = [0]

    def show(topic, payload, msg):
        if args.no_retained and msg.retain or args.count and seen[0] >= args.count:
            return  # -C: one loop step can bring more than the count
        if args.verbose:
            out.write(topic.encode() + b" ")
        out.write(bytes(payload) + end)
        out.flush()
        seen[0] += 1

    c = _client(args, "sub", show)
    deadline = time.monotonic() + args.wait if args.wait else None
    try:
        for t in args.topic:
            c.subscribe(t, args.qos)
        while not args.count or seen[0] < args.count:
            left = 1000 if deadline is None else int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                break
            c.loop(min(left, 1000))
    except MQTTException as e:
        raise CLIError(str(e)) from None
    except (ValueError, MQTTError) as e:  # a bad topic filter
        raise CLIError(str(e)) from None
    finally:
        c.disconnect()
    return 0 if not args.count or seen[0] >= args.count else 27

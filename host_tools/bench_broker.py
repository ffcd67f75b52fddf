"""Broker section of `make bench`: the shared load generator (../shared/bench/broker) runs
midge on CPython (asyncio Protocol driver), midge on MicroPython (asyncio streams, lib
precompiled with mpy-cross as on a board) and Mosquitto (default, i.e. with Nagle, and with
`set_tcp_nodelay true`) side by side, broker pinned to one core, alternating, medians; then
midge's MicroPython heap figures: heap per idle client and drift after 1,000
connect/disconnect cycles (256K heap, from $SYS/broker/heap/current), idle clients accepted
in a 128K heap, and 24 clients exchanging QoS 1 in a ring in a 128K heap."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from host_tools.bench_codec import compile_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench", "broker"))
MP = os.path.join(ROOT, ".venv", "bin", "micropython")
PY = os.path.join(ROOT, ".venv", "bin", "python")
BROKERS = ("midge-cpy", "midge-mpy", "mosquitto", "mosquitto-nodelay")
PUBACK, SUBACK = 4, 9  # MQTT packet types


def _throughput(opts, mpydir, out):
    lib = os.path.join(ROOT, "lib")
    cmd = [
        sys.executable,
        os.path.join(SHARED, "run_anchors.py"),
        "--custom",
        "midge-cpy:28840:env PYTHONPATH=%s %s -m midge.broker_fast --port 28840" % (lib, PY),
        "--custom",
        "midge-mpy:28841:env MICROPYPATH=%s:.frozen %s -X heapsize=8M -m midge.broker --port 28841"
        % (mpydir, MP),
        "--custom",
        "mosquitto-nodelay:28834:mosquitto -c %s"
        % os.path.join(SHARED, "configs", "mosquitto_nodelay.conf"),
        "--brokers",
        ",".join(BROKERS),
        "--reps",
        str(opts.reps),
        "--out",
        out,
    ]
    if opts.quick:
        cmd += ["--scenarios", "fanin,qos1", "--bench-args", "--duration 3 --count 20000"]
    subprocess.run(cmd, check=True, timeout=3600)
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def _qos1_floor(opts, out):
    """QoS 1 round trips of midge (CPython), the Python floor (host_tools.bench_floor: PUBACK
    and pass on, nothing else) and Mosquitto, side by side in a run of their own."""
    cmd = [
        sys.executable,
        os.path.join(SHARED, "run_anchors.py"),
        "--custom",
        "midge-cpy:28840:env PYTHONPATH=%s %s -m midge.broker_fast --port 28840"
        % (os.path.join(ROOT, "lib"), PY),
        "--custom",
        "python-floor:28842:env PYTHONPATH=%s %s -m host_tools.bench_floor 28842" % (ROOT, PY),
        "--brokers",
        "midge-cpy,python-floor,mosquitto",
        "--scenarios",
        "qos1",
        "--reps",
        str(opts.reps),
        "--out",
        out,
    ]
    if opts.quick:
        cmd += ["--bench-args", "--duration 3 --count 20000"]
    subprocess.run(cmd, check=True, timeout=1800)
    with open(os.path.join(out, "summary.json")) as f:
        q = json.load(f)["qos1"]
    return {b: q.get(b, {}).get("msgs_per_s", {}).get("median") for b in q}


# ---- MicroPython heap figures (raw MQTT over sockets, no third-party code)


def _pkt(b0, body):
    n = len(body)
    rl = bytearray()
    while True:
        d = n & 127
        n >>= 7
        rl.append(d | 128 if n else d)
        if not n:
            return bytes((b0,)) + bytes(rl) + body


def _s(x):
    x = x.encode() if isinstance(x, str) else x
    return len(x).to_bytes(2, "big") + x


def _connect(port, cid):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(_pkt(0x10, _s("MQTT") + b"\x04\x02\x00\x3c" + _s(cid)))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    return s


def _read_sys(port, key, wait=3.5):
    """Latest $SYS/broker/<key> value published after we subscribed (one sys_interval)."""
    s = _connect(port, "heapmon%d" % time.monotonic_ns())
    s.sendall(_pkt(0x82, b"\x00\x01" + _s("$SYS/broker/" + key) + b"\x00"))
    buf = b""
    vals = []
    end = time.monotonic() + wait
    s.settimeout(0.2)
    while time.monotonic() < end:
        try:
            buf += s.recv(4096)
        except socket.timeout:
            continue
        while len(buf) >= 2 and len(buf) >= 2 + buf[1]:
            p, buf = buf[: 2 + buf[1]], buf[2 + buf[1] :]
            if p[0] & 0xF0 == 0x30:
                tl = int.from_bytes(p[2:4], "big")
                vals.append(int(p[4 + tl :]))
    s.close()
    return vals[-1]


@contextlib.contextmanager
def _mp_broker(mpydir, heap, conf_text):
    """midge's broker on MicroPython (lib as .mpy) with this config, on a free loopback port:
    yields the port; stopped and its config removed on the way out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fd, conf = tempfile.mkstemp(suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write(conf_text)
    env = dict(os.environ, MICROPYPATH=mpydir + ":.frozen")
    cmd = [MP, "-X", "heapsize=" + heap, "-m", "midge.broker", "--port", str(port)]
    p = subprocess.Popen(
        cmd + ["--config", conf],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        p.stdout.readline()  # the start-up line: listening
        yield port, p
    finally:
        p.terminate()
        p.wait(5)
        p.stdout.close()
        os.unlink(conf)


def max_clients(mpydir, heap, limit=64):
    """Idle clients the MicroPython broker accepts in this heap before it refuses one."""
    socks = []
    with _mp_broker(mpydir, heap, "sys_interval 0\n") as (port, _):
        try:
            for i in range(limit):
                socks.append(_connect(port, "n%02d" % i))
        except (OSError, AssertionError):
            pass
        finally:
            for s in socks:
                s.close()
    return len(socks)


def mp_heap(mpydir, heap):
    """Heap figures from the broker's own $SYS/broker/heap/current: idle, per idle client,
    drift after 1,000 connect/disconnect cycles."""
    res = {"heap": heap}
    with _mp_broker(mpydir, heap, "sys_interval 1\n") as (port, _):
        base = _read_sys(port, "heap/current")
        res["heap_idle_broker"] = base
        socks = []
        for i in range(24):
            try:
                socks.append(_connect(port, "idle%02d" % i))
            except (OSError, AssertionError):
                break
        n = res["clients_connected"] = len(socks)
        with_n = _read_sys(port, "heap/current")
        res["heap_per_idle_client"] = round((with_n - base) / n)
        for s in socks:
            s.sendall(b"\xe0\x00")
            s.close()
        time.sleep(1.2)
        before = _read_sys(port, "heap/current")
        for i in range(1000):
            s = _connect(port, "cyc%d" % i)
            s.sendall(b"\xe0\x00")
            s.close()
        time.sleep(1.2)
        after = _read_sys(port, "heap/current")
        res["heap_before_cycles"] = before
        res["heap_after_1000_cycles"] = after
        res["heap_drift_after_cycles"] = after - before
    return res


def ring_128k(mpydir, n=24, rounds=20):
    """n clients in a 128K heap, each subscribed to its own topic at QoS 1, each publishing
    QoS 1 to the next one, round after round; every PUBACK and delivery checked. $SYS off."""
    from midge import codec as C

    res = {"clients": n, "ok": False}
    socks = []
    with _mp_broker(mpydir, "128K", "sys_interval 0\n") as (port, p):
        try:
            decs = []
            for i in range(n):
                socks.append(_connect(port, "ring%02d" % i))
                decs.append(C.Decoder())

            def recv(i):
                while True:
                    pkt = decs[i].next_packet()
                    if pkt is not None:
                        return pkt
                    data = socks[i].recv(4096)
                    if not data:
                        raise ConnectionError("broker closed client %d" % i)
                    decs[i].receive_data(data)

            for i, s in enumerate(socks):
                s.sendall(C.encode(C.Subscribe(1, [("ring/%d" % i, 1)])))
                assert recv(i).type == SUBACK
            t0 = time.monotonic()
            for k in range(1, rounds + 1):
                for i, s in enumerate(socks):
                    s.sendall(C.encode(C.Publish("ring/%d" % ((i + 1) % n), b"x" * 32, 1, pid=k)))
                for i, s in enumerate(socks):
                    seen = 0
                    while seen != 3:
                        pkt = recv(i)
                        if pkt.type == PUBACK:
                            seen |= 1
                        else:
                            s.sendall(C.encode(C.Ack(PUBACK, pkt.pid)))
                            seen |= 2
            res["msgs_per_s"] = round(n * rounds / (time.monotonic() - t0))
            res["ok"] = p.poll() is None
        except (OSError, AssertionError) as e:
            res["error"] = repr(e)
        finally:
            for s in socks:
                s.close()
    return res


def _fmt(v):
    if v is None:
        return "n/a"
    return "{:,}".format(round(v)) if v >= 10 else "%.2f" % v


def run(opts):
    with tempfile.TemporaryDirectory() as mpydir, tempfile.TemporaryDirectory() as out:
        compile_lib(mpydir)
        heap = mp_heap(mpydir, "256K")
        heap["idle_clients_in_128K"] = max_clients(mpydir, "128K")
        # near the limit heap fragmentation decides: run the ring several times, report all
        rings = [ring_128k(mpydir) for _ in range(max(opts.reps, 1))]
        good = [r for r in rings if r["ok"]]
        heap["ring_128K"] = dict(good[0] if good else rings[0], runs=len(rings), passed=len(good))
        summ = _throughput(opts, mpydir, out)
        floor = _qos1_floor(opts, os.path.join(out, "floor"))
    rows = [
        ("fanin", "delivered_per_s", "fan-in 4→1 QoS 0 msgs/s", True),
        ("fanout", "delivered_per_s", "fan-out 1→50 deliveries/s", True),
        ("qos1", "msgs_per_s", "QoS 1 round trips/s", True),
        ("wildcard", "published_routed_per_s", "wildcard publishes routed/s", True),
        ("conns", "bytes_per_conn", "RSS per idle connection (B)", False),
    ]
    names = ("midge CPython", "midge MicroPython", "Mosquitto", "Mosquitto nodelay")
    md = [
        "| scenario | %s | CPython/Mosquitto | CPython/nodelay |" % " | ".join(names),
        "|---|---|---|---|---|---|---|",
    ]
    data = {"throughput": summ, "micropython_heap": heap, "qos1_floor": floor}
    for sc, key, label, _ in rows:
        if sc not in summ:
            continue
        v = [summ[sc].get(b, {}).get(key, {}).get("median") for b in BROKERS]
        r = ["%.2f×" % (v[0] / m) if v[0] and m else "n/a" for m in (v[2], v[3])]
        md.append("| %s | %s | %s |" % (label, " | ".join(_fmt(x) for x in v), " | ".join(r)))
    ring = heap["ring_128K"]
    m, f, q = (floor.get(b) for b in ("midge-cpy", "python-floor", "mosquitto"))
    if m and f and q:
        md += [
            "",
            "QoS 1 round trips in a run of their own, beside the least a CPython asyncio server",
            "can do per round trip (`host_tools/bench_floor.py`: PUBACK and pass on, no MQTT",
            "logic): midge %s, Python floor %s, Mosquitto %s msgs/s; midge/floor %.2f×,"
            % (_fmt(m), _fmt(f), _fmt(q), m / f),
            "floor/Mosquitto %.2f×, midge/Mosquitto %.2f×." % (f / q, m / q),
        ]
    md += [
        "",
        "midge on MicroPython, lib as .mpy (loaded into the heap, as on a board without frozen",
        "modules); heap from `$SYS/broker/heap/current` in a 256K heap:",
        "",
        "| figure | value |",
        "|---|---|",
        "| heap per idle client | %s B |" % heap["heap_per_idle_client"],
        "| broker heap with one client (code included) | %s B |" % heap["heap_idle_broker"],
        "| heap drift after 1,000 connect/disconnect cycles | %+d B |"
        % heap["heap_drift_after_cycles"],
        "| idle clients accepted in a 128K heap (no $SYS) | %d |" % heap["idle_clients_in_128K"],
        "| 24 clients exchanging QoS 1 in a 128K heap | %s |"
        % (
            "passed %d of %d runs (%s msgs/s, all delivered and acknowledged)"
            % (ring["passed"], ring["runs"], ring["msgs_per_s"])
            if ring["ok"]
            else "failed in %d of %d runs: %s" % (ring["runs"], ring["runs"], ring.get("error"))
        ),
    ]
    return "\n".join(md), data

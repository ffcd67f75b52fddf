"""Client section of `make bench`: midge vs umqtt.simple on MicroPython (64-bit unix port)
and midge vs paho-mqtt on CPython, against the same Mosquitto, side by side in one run.

umqtt.simple comes from the package registry (micropython-umqtt.simple 1.3.4, fetched with
pip into bench/scratch/, never committed). Figures: .mpy bytes, heap after import and after
connect (lib as .mpy files loaded into the heap, and run in place from a ROMFS image as from
a board's flash), heap bytes per QoS 0 / QoS 1 publish and per received message (gc.mem_alloc
with the collector off), QoS 0 / QoS 1 / receive msgs/s (medians of --reps)."""

import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from host_tools.bench_codec import compile_lib, mpy_cross

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "host_tools", "mp", "bench_client_run.py")
SCRATCH = os.path.join(ROOT, "bench", "scratch")
MP = os.path.join(ROOT, ".venv", "bin", "micropython")
sys.path.insert(0, os.path.join(ROOT, "tests", "host"))
import harness  # noqa: E402


def fetch_umqtt():
    """umqtt/simple.py from the registry's micropython-umqtt.simple (an sdist pip downloads
    but will not build: --no-clean keeps the unpacked source)."""
    dest = os.path.join(SCRATCH, "umqtt", "simple.py")
    if os.path.exists(dest):
        return dest
    tmp = os.path.join(SCRATCH, "tmp")
    os.makedirs(tmp, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-clean",
            "--no-deps",
            "-d",
            tmp,
            "micropython-umqtt.simple==1.3.4",
        ],
        env=dict(os.environ, TMPDIR=tmp),
        capture_output=True,
    )
    found = glob.glob(os.path.join(tmp, "**", "umqtt", "simple.py"), recursive=True)
    if not found:
        return None
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy(found[0], dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _pkt(topic, payload):
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + payload
    return bytes((0x30, len(body))) + body


def blast(port, n):
    """Send n QoS 0 PUBLISHes to bench/rx as fast as the socket takes them."""
    s = socket.create_connection(("127.0.0.1", port))
    cid = b"blaster"
    s.sendall(
        bytes((0x10, 12 + len(cid)))
        + b"\x00\x04MQTT\x04\x02\x00\x3c\x00"
        + bytes((len(cid),))
        + cid
    )
    s.recv(4)
    s.sendall(_pkt("bench/rx", b"0123456789abcdef") * n)
    time.sleep(0.5)
    s.close()


def run_client(cmd, env, kind, port, n, n1):
    p = subprocess.Popen(
        cmd + [SCRIPT, kind, str(port), str(n), str(n1)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = p.stdout.readline()
    if line.strip() != "READY":
        p.kill()
        raise RuntimeError("client bench %s failed: %s %s" % (kind, line, p.stderr.read()[-500:]))
    threading.Thread(target=blast, args=(port, n), daemon=True).start()
    out, err = p.communicate(timeout=600)
    if p.returncode:
        raise RuntimeError("client bench %s failed: %s" % (kind, err[-500:]))
    return json.loads(out.strip().splitlines()[-1])


def rom_run(img, port):
    """Heap after import and connect with the library in a ROMFS image (MicroPython >= 1.25
    runs bytecode from it in place, as from a board's flash partition)."""
    out = subprocess.run(
        [MP, "-X", "heapsize=2M", SCRIPT, "rom", str(port), img],
        env=dict(os.environ, MICROPYPATH=".frozen"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode:
        raise RuntimeError("client bench rom failed: %s" % out.stderr[-500:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def paho_run(port, n):
    import paho.mqtt.client as paho

    res = {"kind": "paho"}
    got = [0]
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-paho")
    c.on_message = lambda *a: got.__setitem__(0, got[0] + 1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for q in (0, 1):
        t0 = time.perf_counter()
        for _ in range(n):
            info = c.publish("sensors/drone01/altitude", b"0123456789abcdef", q)
        info.wait_for_publish(60)
        res["rate_pub%d" % q] = n / (time.perf_counter() - t0)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe("bench/rx", 0)
    done.wait(5)
    threading.Thread(target=blast, args=(port, n), daemon=True).start()
    while not got[0]:
        time.sleep(0.0005)
    t0, first = time.perf_counter(), got[0]
    end = t0 + 60
    while got[0] < n and time.perf_counter() < end:
        time.sleep(0.001)
    res["rate_recv"] = (got[0] - first) / (time.perf_counter() - t0)
    c.disconnect()
    c.loop_stop()
    return res


def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def run(opts):
    n = 1000 if opts.quick else 5000
    umqtt = fetch_umqtt()
    m = harness.Mosquitto().start()
    tmp = tempfile.mkdtemp(prefix="midge-bench-client-")
    try:
        mpy = os.path.join(tmp, "mpy")
        compile_lib(mpy)
        img = os.path.join(tmp, "rom.img")
        subprocess.run(
            [os.path.join(os.path.dirname(MP), "mpremote"), "romfs", "-o", img, "build", mpy],
            check=True,
            capture_output=True,
        )
        sizes = {
            f: os.path.getsize(os.path.join(mpy, "midge", f + ".mpy"))
            for f in (
                "client_core",
                "client",
                "aclient",
                "umqtt",
                "tls",
                "codec",
                "topics",
                "compat",
            )
        }
        kinds = {
            "midge-mp": (
                [MP, "-X", "heapsize=2M"],
                dict(os.environ, MICROPYPATH=mpy + ":.frozen"),
                "midge",
            ),
            "midge-cpy": (
                [sys.executable],
                dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib")),
                "midge",
            ),
        }
        if umqtt:
            ud = os.path.join(tmp, "umqtt_mpy")
            os.makedirs(os.path.join(ud, "umqtt"))
            subprocess.run(
                [mpy_cross(), "-o", os.path.join(ud, "umqtt", "simple.mpy"), umqtt], check=True
            )
            sizes["umqtt.simple"] = os.path.getsize(os.path.join(ud, "umqtt", "simple.mpy"))
            kinds["umqtt-mp"] = (
                [MP, "-X", "heapsize=2M"],
                dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (ud, mpy)),
                "umqtt",
            )
        runs = {k: [] for k in kinds}
        runs["paho"] = []
        runs["midge-rom"] = []
        for _ in range(opts.reps):
            for name, (cmd, env, kind) in kinds.items():
                n1 = n if kind == "midge" else (50 if opts.quick else 200)  # umqtt: ~22/s
                runs[name].append(run_client(cmd, env, kind, m.port, n, n1))
            runs["paho"].append(paho_run(m.port, n))
            runs["midge-rom"].append(rom_run(img, m.port))
    finally:
        m.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    keys = (
        "heap_import",
        "heap_connect",
        "alloc_pub0",
        "alloc_pub1",
        "alloc_recv",
        "rate_pub0",
        "rate_pub1",
        "rate_recv",
    )
    fig = {"n": n, "mpy_bytes": sizes}
    for name, rs in runs.items():
        fig[name] = {k: med(rs, k) for k in keys}
        i, c = fig[name]["heap_import"], fig[name]["heap_connect"]
        fig[name]["heap_state"] = None if i is None else c - i
    return markdown(fig), fig


def _b(x):
    return "—" if x is None else "%.1f KB" % (x / 1024)


def _a(x):
    return "—" if x is None else "%d" % round(x)


def _r(x):
    return "—" if x is None else ("%.1fk" % (x / 1000) if x >= 1000 else "%d" % round(x))


def markdown(fig):
    s = fig["mpy_bytes"]
    rows = [
        "| client | .mpy bytes | heap after import / connect (connect − import) | heap bytes per QoS 0 / QoS 1 publish | per received msg | QoS 0 / QoS 1 / receive msgs/s |",
        "|---|---|---|---|---|---|",
    ]
    names = [
        ("midge-mp", "midge (MicroPython)"),
        ("midge-rom", "midge (MicroPython, lib in ROMFS: code in flash)"),
        ("umqtt-mp", "umqtt.simple 1.3.4 (MicroPython)"),
        ("midge-cpy", "midge (CPython)"),
        ("paho", "paho-mqtt 2.2 (CPython)"),
    ]
    for key, label in names:
        f = fig.get(key)
        if not f:
            continue
        size = "—"
        if key == "midge-mp":
            size = (
                "%d core (client_core %d + client %d); with asyncio %d (client_core + aclient"
                " %d); shared: codec %d, topics %d, compat %d; umqtt %d, tls %d"
                % (
                    s["client_core"] + s["client"],
                    s["client_core"],
                    s["client"],
                    s["client_core"] + s["aclient"],
                    s["aclient"],
                    s["codec"],
                    s["topics"],
                    s["compat"],
                    s["umqtt"],
                    s["tls"],
                )
            )
        elif key == "umqtt-mp":
            size = "%d" % s["umqtt.simple"]
        rows.append(
            "| %s | %s | %s / %s (%s) | %s / %s | %s | %s / %s / %s |"
            % (
                label,
                size,
                _b(f["heap_import"]),
                _b(f["heap_connect"]),
                _b(f["heap_state"]),
                _a(f["alloc_pub0"]),
                _a(f["alloc_pub1"]),
                _a(f["alloc_recv"]),
                _r(f["rate_pub0"]),
                _r(f["rate_pub1"]),
                _r(f["rate_recv"]),
            )
        )
    rows.append("")
    rows.append(
        "%d messages of 16 bytes to `sensors/drone01/altitude` per rate (umqtt.simple QoS 1: 200,"
        " it waits out Nagle on every PUBACK); midge QoS 1 keeps a window of 8 in flight;"
        " midge writes what a loop step produced in one write (QoS 0 rates include the"
        " final flush). Heap figures on MicroPython 1.29 unix (64-bit), counted from before"
        " anything of midge is imported (compat and the package included), lib as .mpy"
        ' files: "after connect" includes the code loaded into the heap (about twice the .mpy'
        " size); connect − import is the client's own state. In ROMFS (an image built with"
        " `mpremote romfs build`, what `mpremote romfs deploy` puts in a board's flash) the"
        " bytecode runs in place and the heap holds only the function, class and constant"
        " objects (~60 B per method, ~80 B per function, ~260 B per class), the names not"
        " built into the firmware, and the state. Per received message: the codec's decode"
        " of a 16-byte PUBLISH (the client adds none)." % fig["n"]
    )
    return "\n".join(rows)

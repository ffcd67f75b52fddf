"""Codec section of `make bench`: encode/decode rates and heap bytes per operation on
MicroPython (lib/ precompiled with mpy-cross, as on a board) and CPython, side by side in
one run, medians of --reps; plus the .mpy size of every lib/midge module."""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from host_tools.mpycheck import board_files, mpy_cross, mpy_sizes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "host_tools", "mp", "bench_codec_run.py")
OPS = (
    ("encode_publish_q0", "encode PUBLISH QoS 0 into a buffer"),
    ("encode_publish_q1", "encode PUBLISH QoS 1 into a buffer"),
    ("encode_puback", "encode PUBACK"),
    ("decode_publish_copy", "decode PUBLISH, one per read, payload copied"),
    ("decode_publish_view", "decode PUBLISH, one per read, payload as memoryview"),
    ("decode_publish_copy_x16", "decode PUBLISH, 16 per read, payload copied"),
    ("decode_publish_view_x16", "decode PUBLISH, 16 per read, payload as memoryview"),
    ("decode_publish_reuse", "decode PUBLISH, one per read, reuse=True (one Publish refilled)"),
    ("decode_publish_reuse_x16", "decode PUBLISH, 16 per read, reuse=True"),
)


def compile_lib(dest):
    for f in board_files():
        rel = os.path.relpath(f, os.path.join(ROOT, "lib"))
        if rel.startswith(".."):
            continue
        out = os.path.join(dest, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run([mpy_cross(), "-o", out, "-s", rel, f], check=True)


def run_once(cmd, env, n):
    out = subprocess.run(
        cmd + [SCRIPT, str(n)], env=env, capture_output=True, text=True, timeout=300
    )
    if out.returncode:
        raise RuntimeError("codec bench failed: %s" % out.stderr.strip()[-400:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(opts):
    n = 5000 if opts.quick else 50000
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    with tempfile.TemporaryDirectory() as tmp:
        compile_lib(os.path.join(tmp, "mpy"))
        mp_env = dict(os.environ, MICROPYPATH=os.path.join(tmp, "mpy") + ":.frozen")
        cp_env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
        runs = {"micropython": [], "cpython": []}
        for _ in range(opts.reps):  # alternate the runtimes so load drifts hit both
            runs["micropython"].append(run_once([mp, "-X", "heapsize=128K"], mp_env, n))
            runs["cpython"].append(run_once([sys.executable], cp_env, n))

    def med(rt, key, i):
        return statistics.median(r[key][i] for r in runs[rt])

    figures = {
        "ops": n,
        "import_heap_micropython": statistics.median(r["import_heap"] for r in runs["micropython"]),
    }
    rows = [
        "| operation | MicroPython ops/s | MicroPython heap B/op | CPython ops/s | CPython / MicroPython |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in OPS:
        m_rate, m_heap, c_rate = (
            med("micropython", key, 0),
            med("micropython", key, 1),
            med("cpython", key, 0),
        )
        figures[key] = {"mp_ops_s": m_rate, "mp_heap_per_op": m_heap, "cp_ops_s": c_rate}
        rows.append(
            "| %s | %s | %d | %s | %.1f× |"
            % (label, "{:,.0f}".format(m_rate), m_heap, "{:,.0f}".format(c_rate), c_rate / m_rate)
        )
    sizes = mpy_sizes([f for f in board_files() if os.sep + "midge" + os.sep in f])
    figures["mpy_sizes"] = sizes
    size_rows = ["| module | .mpy bytes |", "|---|---:|"]
    size_rows += [
        "| `%s` | %s |" % (os.path.basename(k), "{:,}".format(v)) for k, v in sorted(sizes.items())
    ]
    size_rows.append("| **all of lib/midge** | **%s** |" % "{:,}".format(sum(sizes.values())))
    nolines = mpy_sizes(
        [os.path.join(ROOT, "lib", "midge", "codec.py")], extra=("-X", "no-source-lines")
    )
    figures["codec_mpy_no_source_lines"] = list(nolines.values())[0]
    md = (
        "Codec, %s operations per figure, 24-byte topic `sensors/drone01/altitude`, 8-byte payload. "
        "Heap bytes per operation are `gc.mem_alloc()` deltas with the collector off "
        "(MicroPython 1.29 unix, 64-bit: a 32-bit board uses about 0.5–0.7× of that). "
        "Heap held after `import midge.codec` (.mpy): %s bytes.\n\n%s\n\n"
        ".mpy sizes (mpy-cross 1.29, bytecode, with line numbers; `codec.py` without line numbers: %s bytes):\n\n%s\n"
    ) % (
        "{:,}".format(n),
        "{:,}".format(int(figures["import_heap_micropython"])),
        "\n".join(rows),
        "{:,}".format(figures["codec_mpy_no_source_lines"]),
        "\n".join(size_rows),
    )
    return md, figures

"""`midge bench` / `make bench`: run every benchmark section, write bench/results.md and
bench/results.json, and refresh the matching tables in README.md (between
<!-- bench:NAME --> and <!-- /bench:NAME --> markers).

A section is a module host_tools/bench_<name>.py with `run(opts) -> (markdown, data)`.
Figures are medians; compare side by side within one run (ratios), never across machines.
"""

import importlib
import json
import os
import platform
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ["codec", "client", "broker"]


def add_arguments(p):
    p.add_argument(
        "sections", nargs="*", help="sections to run (default: all of %s)" % ", ".join(SECTIONS)
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions per figure (median reported)")
    p.add_argument("--quick", action="store_true", help="smaller loads, for a smoke run")
    p.add_argument("--out", default=os.path.join(ROOT, "bench"), help="folder for results.md/json")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite README.md tables")


def update_readme(name, markdown, path=os.path.join(ROOT, "README.md")):
    try:
        text = open(path).read()
    except OSError:
        return False
    begin, end = "<!-- bench:%s -->" % name, "<!-- /bench:%s -->" % name
    pat = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pat.search(text):
        return False
    text = pat.sub(lambda m: begin + "\n" + markdown.strip() + "\n" + end, text)
    with open(path, "w") as f:
        f.write(text)
    return True


def run(args):
    sections = args.sections or SECTIONS
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = (
        "# midge benchmark results\n\nLast run %s on %s, Python %s, %d CPUs. Medians of %d.\n"
        % (
            stamp,
            platform.machine(),
            platform.python_version(),
            os.cpu_count() or 0,
            args.reps,
        )
    )
    md_parts = [header]
    data = {"when": stamp, "reps": args.reps}
    jpath = os.path.join(args.out, "results.json")
    try:
        with open(jpath) as f:
            data.update({k: v for k, v in json.load(f).items() if k not in data})
    except (OSError, ValueError):
        pass
    for name in sections:
        if name not in SECTIONS:
            print(
                "unknown bench section %r (have %s)" % (name, ", ".join(SECTIONS)), file=sys.stderr
            )
            return 2
        try:
            mod = importlib.import_module("host_tools.bench_" + name)
        except ModuleNotFoundError:
            print("bench %s: not built yet, skipped" % name)
            continue
        print("== bench %s" % name, flush=True)
        markdown, figures = mod.run(args)
        data[name] = figures
        data.setdefault("markdown", {})[name] = {"when": stamp, "text": markdown.strip()}
        if not args.no_readme:
            update_readme(name, markdown)
        print(markdown)
    mpath = os.path.join(args.out, "results.md")
    # every section's latest run, including sections not re-run this time
    for name in SECTIONS:
        sec = data.get("markdown", {}).get(name)
        if sec:
            md_parts.append("## %s (run %s)\n\n%s\n" % (name, sec["when"], sec["text"]))
    with open(mpath, "w") as f:
        f.write("\n".join(md_parts))
    with open(jpath, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    print("wrote %s and %s" % (mpath, jpath))
    return 0

"""firmware/manifest.py, evaluated the way MicroPython's build does (host_tools.fwlayout's
stand-ins for module(), package(), include(), require()): every named path exists, every frozen file
compiles with mpy-cross for each board's arch, and the frozen tree boots the app on the
real MicroPython interpreter without the source tree."""

import os
import shutil
import subprocess
import sys

import pytest

from host_tools.fwlayout import ROOT, board_files, evaluate

BIN = os.path.dirname(sys.executable)
BOARDS = ["esp32", "esp32s3", "rpi_pico_w", "rpi_pico2_w", "unix"]


def test_manifest_names_existing_paths_only():
    frozen, external = evaluate()
    assert external == ["$(PORT_DIR)/boards/manifest.py"]  # the port's own modules stay
    names = set(frozen)
    assert {"midge/client.py", "midge/broker.py", "midge/codec.py"} <= names
    assert {"app/run.py", "app/config.py", "app/drone.py", "app/net.py", "app/hw.py"} <= names
    assert {"boards/%s.py" % b for b in BOARDS} <= names
    libs = {
        "midge/" + f for f in os.listdir(os.path.join(ROOT, "lib", "midge")) if f.endswith(".py")
    }
    assert libs - names == {"midge/broker_fast.py"}  # CPython-only; everything else is frozen
    assert not [n for n in names if n.startswith("tests/") or "main.py" in n or "boot.py" in n]


def test_every_frozen_module_imports_on_micropython():
    frozen, _ = evaluate()
    mods = sorted(n[:-3].replace("/", ".").replace(".__init__", "") for n in frozen)
    code = "import gc\nfor m in %r:\n    __import__(m)\n    gc.collect()\nprint('ok', len(%r))" % (
        mods,
        mods,
    )
    env = dict(os.environ, MICROPYPATH="%s/lib:%s/firmware:%s:.frozen" % (ROOT, ROOT, ROOT))
    r = subprocess.run(
        [os.path.join(BIN, "micropython"), "-X", "heapsize=256K", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.stdout.strip() == "ok %d" % len(mods), r.stdout + r.stderr


@pytest.mark.parametrize("arch", [None, "xtensawin", "armv6m", "armv7emsp"])
def test_every_frozen_file_compiles_for_the_board_archs(arch, tmp_path):
    frozen, _ = evaluate()
    for name, src in sorted(frozen.items()):
        cmd = [os.path.join(BIN, "mpy-cross"), "-o", str(tmp_path / "x.mpy"), src]
        if arch:
            cmd.insert(1, "-march=" + arch)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, "%s (%s): %s" % (name, arch, r.stderr)


def test_frozen_tree_boots_the_app_on_micropython(tmp_path):
    """Only the frozen files (compiled to .mpy) on the path: main.py's imports resolve and
    a board without a config idles with one line instead of a traceback."""
    frozen, _ = evaluate()
    tree = tmp_path / "frozen"
    for name, src in frozen.items():
        out = tree / (name[:-3] + ".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([os.path.join(BIN, "mpy-cross"), "-o", str(out), src], check=True)
    flash = tmp_path / "flash"
    flash.mkdir()
    shutil.copy(os.path.join(ROOT, "firmware", "main.py"), flash / "main.py")
    env = dict(os.environ, MICROPYPATH="%s:.frozen" % tree)
    r = subprocess.run(
        [os.path.join(BIN, "micropython"), "main.py"],
        cwd=flash,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "midge: no config.json on the board: run `midge provision --port PORT`",
        "midge: idle, REPL free",
    ]


def test_board_files_are_the_frozen_set_in_the_deploy_layout():
    files = dict((dst, src) for src, dst in board_files())
    assert files["main.py"].endswith("firmware/main.py") and "boot.py" in files
    assert files["lib/midge/codec.py"].endswith("lib/midge/codec.py")
    assert files["app/run.py"].endswith("firmware/app/run.py")
    assert files["boards/unix.py"].endswith("boards/unix.py")
    assert len(files) == len(evaluate()[0]) + 2
    assert all(os.path.isfile(src) for src in files.values())

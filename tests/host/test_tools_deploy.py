"""`midge deploy` against the virtual board with the real mpremote and mpy-cross."""

import os

from vbtools import ROOT, midge, vboard  # noqa: F401  (pytest fixture)

from host_tools import deploy, mpr


def _files(root):
    out = set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            out.add("/" + os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return out


def test_cli_deploys_compiled_tree_then_copies_nothing(vboard):  # noqa: F811
    r = midge("deploy", "--port", vboard.device)
    assert r.returncode == 0, r.stderr
    assert "board reads mpy v6.3 (x64): compiling" in r.stdout
    lib = sorted(f for f in os.listdir(os.path.join(ROOT, "lib", "midge")) if f.endswith(".py"))
    on_board = _files(vboard.flash_dir)
    for f in lib:
        assert "/lib/midge/%s.mpy" % f[:-3] in on_board
        assert "[" in r.stdout and "/lib/midge/%s.mpy (" % f[:-3] in r.stdout  # progress line
    assert {"/boot.py", "/main.py", "/app/config.mpy", "/boards/unix.mpy"} <= on_board
    with open(os.path.join(vboard.flash_dir, "lib", "midge", "codec.mpy"), "rb") as f:
        assert f.read(2) == b"M\x06"
    out = mpr.exec_(vboard.device, "import midge.codec, app.config; print(midge.codec.__file__)")
    assert out.strip() == "/lib/midge/codec.mpy"
    again = midge("deploy", "--port", vboard.device)
    assert again.returncode == 0, again.stderr
    n = len(deploy.app_sources())
    assert "deploy: 0 copied, %d unchanged, 0 removed" % n in again.stdout


def _tree(tmp_path, files):
    src = tmp_path / "src"
    for name, text in files.items():
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return [(str(src / n), "/" + n, n != "main.py") for n in sorted(files)]


def test_only_changes_copied_stale_removed_user_files_kept(vboard, tmp_path):  # noqa: F811
    lines = []
    sync = deploy.Sync(vboard.device, ("/lib/pkg",), "/.midge-deploy", say=lines.append)
    items = _tree(
        tmp_path,
        {
            "main.py": "print('main')\n",
            "extra.py": "X = 1\n",
            "lib/pkg/__init__.py": "",
            "lib/pkg/a.py": "A = 1\n",
            "lib/pkg/b.py": "B = 2\n",
            "lib/pkg/sub/c.py": "C = 3\n",
        },
    )
    assert sync.run(items) == (6, 0, 0)
    with open(os.path.join(vboard.flash_dir, "config.json"), "w") as f:
        f.write("{}")  # not ours: a deploy must keep it
    (tmp_path / "src" / "lib" / "pkg" / "a.py").write_text("A = 10\n")
    os.remove(str(tmp_path / "src" / "lib" / "pkg" / "b.py"))
    os.remove(str(tmp_path / "src" / "extra.py"))
    items = [i for i in items if os.path.exists(i[0])]
    lines.clear()
    assert sync.run(items) == (1, 3, 2)
    assert [ln for ln in lines if ln.startswith("[")] == [
        "[1/1] /lib/pkg/a.mpy (%d B)"
        % os.path.getsize(os.path.join(vboard.flash_dir, "lib", "pkg", "a.mpy"))
    ]
    assert "removed /extra.mpy" in lines and "removed /lib/pkg/b.mpy" in lines
    assert _files(vboard.flash_dir) == {
        "/.midge-deploy",
        "/config.json",
        "/main.py",
        "/lib/pkg/__init__.mpy",
        "/lib/pkg/a.mpy",
        "/lib/pkg/sub/c.mpy",
    }
    out = mpr.exec_(vboard.device, "import pkg.a, pkg.sub.c; print(pkg.a.A + pkg.sub.c.C)")
    assert out.strip() == "13"


def test_native_code_compiled_for_the_boards_arch(vboard, tmp_path):  # noqa: F811
    items = _tree(
        tmp_path,
        {"lib/nat.py": "import micropython\n@micropython.native\ndef f(x):\n    return x * 2\n"},
    )
    deploy.Sync(vboard.device, ("/lib",), say=lambda s: None).run(items)
    assert mpr.exec_(vboard.device, "import nat; print(nat.f(21))").strip() == "42"


def test_no_compile_copies_sources(vboard, tmp_path):  # noqa: F811
    items = _tree(tmp_path, {"lib/m.py": "M = 5\n"})
    deploy.Sync(vboard.device, ("/lib",), compile=False, say=lambda s: None).run(items)
    assert _files(vboard.flash_dir) == {"/lib/m.py"}
    assert mpr.exec_(vboard.device, "import m; print(m.M)").strip() == "5"


def test_compile_plan_follows_the_boards_mpy_version():
    assert deploy.compile_plan(2822, (6, 3))[:2] == (True, "x64")  # the unix port
    xtensawin = 6 | (3 << 8) | (10 << 10)
    assert deploy.compile_plan(xtensawin, (6, 3))[:2] == (True, "xtensawin")
    assert deploy.compile_plan(6 | (2 << 8) | (10 << 10), (6, 3))[:2] == (True, None)  # bytecode
    assert deploy.compile_plan(5 | (10 << 10), (6, 3))[:2] == (False, None)  # old firmware: .py
    assert deploy.compile_plan(0, (6, 3))[:2] == (False, None)


def test_no_board_is_one_line(tmp_path):
    r = midge("deploy", "--port", str(tmp_path / "ttyNONE"), timeout=30)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "failed to access" in r.stderr

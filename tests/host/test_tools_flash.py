"""`midge flash`: image checks on synthetic images made with esptool's own classes, the exact
esptool plan (--dry-run), esptool's real "no board" paths over socket://, UF2 checks and the
copy to a fake BOOTSEL drive, then waiting for the (virtual) board's REPL."""

import os
import shlex
import socket
import struct
import subprocess
import sys
import threading

from esptool import bin_image
from harness import free_port
from vbtools import midge, vboard  # noqa: F401  (pytest fixture)

from host_tools import boardinfo, flash, uf2

RP2040, RP2350 = 0xE48BFF56, 0xE48BFF59


def esp_image(path, cls=bin_image.ESP32FirmwareImage, size=300):
    img = cls()
    seg = bin_image.ImageSegment(
        0x3FFB0000, bytes(range(256)) * (size // 256) + b"\x5a" * (size % 256)
    )
    seg.name = ".dram0.data"
    img.segments = [seg]
    img.entrypoint = 0x40080000
    img.append_digest = True
    img.save(str(path))
    return path.read_bytes()


def uf2_file(path, family=RP2040, nblocks=4, base=0x10000000):
    blocks = []
    for i in range(nblocks):
        head = struct.pack(
            "<8I", uf2.MAGIC0, uf2.MAGIC1, uf2.FLAG_FAMILY, base + 256 * i, 256, i, nblocks, family
        )
        blocks.append(head + bytes([i]) * 256 + bytes(476 - 256) + struct.pack("<I", uf2.MAGIC_END))
    path.write_bytes(b"".join(blocks))
    return path


def fake_drive(folder, board_id):
    folder.mkdir()
    (folder / "INFO_UF2.TXT").write_text(
        "UF2 Bootloader v1.0\nModel: Raspberry Pi\nBoard-ID: %s\n" % board_id
    )
    (folder / "INDEX.HTM").write_text("<html></html>")
    return folder


def test_dry_run_prints_exact_esptool_command(tmp_path):
    esp_image(tmp_path / "fw.bin")
    r = midge(
        "flash",
        "--board",
        "esp32",
        "--port",
        "/dev/ttyUSB7",
        "--firmware",
        tmp_path / "fw.bin",
        "--dry-run",
        "--erase",
    )
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("would run: ")][0]
    argv = shlex.split(line[len("would run: ") :])
    assert argv == flash.esptool_argv(
        boardinfo.load("esp32"), "/dev/ttyUSB7", str(tmp_path / "fw.bin"), erase=True
    )
    assert argv[argv.index("--chip") + 1] == "esp32" and argv[-2:] == [
        "0x1000",
        str(tmp_path / "fw.bin"),
    ]
    assert "write-flash" in argv and "--erase-all" in argv
    esp_image(tmp_path / "s3.bin", bin_image.ESP32S3FirmwareImage)
    r = midge(
        "flash",
        "--board",
        "esp32s3",
        "--port",
        "/dev/ttyACM0",
        "--firmware",
        tmp_path / "s3.bin",
        "--dry-run",
    )
    assert r.returncode == 0 and "--chip esp32s3" in r.stdout and " 0x0 " in r.stdout
    assert "--erase-all" not in r.stdout


def test_bad_esp_images_are_refused(tmp_path):
    good = esp_image(tmp_path / "good.bin")
    cases = {
        "bad magic": (b"\x00" + good[1:], "not an ESP firmware image"),
        "bad checksum": (good[:40] + bytes([good[40] ^ 1]) + good[41:], "checksum mismatch"),
        "bad digest": (good[:-1] + bytes([good[-1] ^ 1]), "SHA-256 digest mismatch"),
        "truncated": (good[:100], "runs past the end"),
        "too big": (good + b"\xff" * (4 * 1024 * 1024), "do not fit"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / "x.bin").write_bytes(data)
        r = midge(
            "flash",
            "--board",
            "esp32",
            "--port",
            "p",
            "--firmware",
            tmp_path / "x.bin",
            "--dry-run",
        )
        assert r.returncode == 2 and message in r.stderr, (name, r.stderr)
        assert r.stderr.count("\n") == 1
    esp_image(tmp_path / "s3.bin", bin_image.ESP32S3FirmwareImage)
    r = midge(
        "flash", "--board", "esp32", "--port", "p", "--firmware", tmp_path / "s3.bin", "--dry-run"
    )
    assert r.returncode == 2 and "built for esp32s3 (chip id 9), the board is esp32" in r.stderr


def test_merged_image_checks_the_app_too(tmp_path):
    boot = esp_image(tmp_path / "boot.bin")
    app = esp_image(tmp_path / "app.bin", size=1000)
    merged = boot + b"\xff" * (0xF000 - len(boot)) + app
    (tmp_path / "m.bin").write_bytes(merged)
    r = midge(
        "flash", "--board", "esp32", "--port", "p", "--firmware", tmp_path / "m.bin", "--dry-run"
    )
    assert r.returncode == 0 and "app at 0x10000 ok" in r.stdout
    bad = merged[: 0xF000 + 40] + bytes([merged[0xF000 + 40] ^ 1]) + merged[0xF000 + 41 :]
    (tmp_path / "m.bin").write_bytes(bad)
    r = midge(
        "flash", "--board", "esp32", "--port", "p", "--firmware", tmp_path / "m.bin", "--dry-run"
    )
    assert r.returncode == 2 and "(app at 0x10000): checksum mismatch" in r.stderr


def test_real_esptool_no_board_paths(tmp_path):
    esp_image(tmp_path / "fw.bin")
    url = "socket://127.0.0.1:%d" % free_port()  # bound and closed again: nothing listens
    r = midge(
        "flash", "--board", "esp32", "--port", url, "--firmware", tmp_path / "fw.bin", timeout=60
    )
    assert (
        r.returncode == 2
        and r.stderr.strip() == "midge flash: %s: no board there (the port cannot be opened)" % url
    )
    # a port that opens but never answers: esptool sends its SYNC frames and gives up
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = bytearray()

    def listen():
        srv.settimeout(20)
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        conn.settimeout(10)
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                got.extend(data)
        except OSError:
            pass
        conn.close()

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    url = "socket://127.0.0.1:%d" % srv.getsockname()[1]
    try:
        r = midge(
            *("flash", "--board", "esp32", "--port", url, "--firmware", tmp_path / "fw.bin"),
            "--connect-attempts",
            "1",
            timeout=60,
        )
    finally:
        t.join(15)
        srv.close()
    assert (
        r.returncode == 2 and "no ESP bootloader answered" in r.stderr and r.stderr.count("\n") == 1
    )
    assert bytes([0xC0, 0x00, 0x08]) in got  # SLIP frame of the ROM loader's SYNC command


def test_uf2_checks(tmp_path):
    good = uf2_file(tmp_path / "pico.uf2").read_bytes()
    assert uf2.check(good, RP2040, 2 * 1024 * 1024) == "UF2 ok: 4 blocks for RP2040"
    cases = {
        "family": (
            good,
            RP2350,
            "built for RP2040 (family 0xE48BFF56), the board needs RP2350 Arm-S",
        ),
        "truncated": (good[:-512], RP2040, "3 of 4 blocks present"),
        "partial": (good[:-100], RP2040, "not a whole number of 512-byte UF2 blocks"),
        "magic": (b"X" + good[1:], RP2040, "bad UF2 magic"),
        "order": (
            good[512:1024] + good[:512] + good[1024:],
            RP2040,
            "numbered 1 of 4 (expected 0 of 4)",
        ),
    }
    for name, (data, family, message) in cases.items():
        try:
            uf2.check(data, family, 2 * 1024 * 1024)
        except Exception as e:
            assert message in str(e), (name, str(e))
        else:
            raise AssertionError("%s accepted" % name)
    far = uf2_file(tmp_path / "far.uf2", base=0x10000000 + 4 * 1024 * 1024).read_bytes()
    try:
        uf2.check(far, RP2040, 2 * 1024 * 1024)
        raise AssertionError("outside flash accepted")
    except Exception as e:
        assert "outside the board's flash" in str(e)


def test_esptool_uf2_is_refused_for_a_pico(tmp_path):
    esp_image(tmp_path / "fw.bin")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "esptool",
            "--chip",
            "esp32",
            "merge-bin",
            "--format",
            "uf2",
            "-o",
            str(tmp_path / "esp.uf2"),
            "0x1000",
            str(tmp_path / "fw.bin"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    r = midge(
        "flash",
        "--board",
        "rpi-pico-w",
        "--firmware",
        tmp_path / "esp.uf2",
        "--dry-run",
        "--drive",
        tmp_path,
    )
    assert r.returncode == 2 and "family 0x1C5F21B0" in r.stderr


def test_drive_detection(tmp_path):
    rp2 = fake_drive(tmp_path / "RPI-RP2", "RPI-RP2")
    rp2350 = fake_drive(tmp_path / "RP2350", "RP2350")
    other = tmp_path / "USBSTICK"
    other.mkdir()
    assert uf2.find_drive(RP2040, [str(other), str(rp2), str(rp2350)]) == str(rp2)
    assert uf2.find_drive(RP2350, [str(other), str(rp2), str(rp2350)]) == str(rp2350)
    for cands, message in (
        ([str(other)], "no RPI-RP2 drive found"),
        ([str(rp2), str(rp2)], "several RPI-RP2 drives"),
    ):
        try:
            uf2.find_drive(RP2040, cands)
            raise AssertionError("accepted %s" % cands)
        except Exception as e:
            assert message in str(e)
    uf2_file(tmp_path / "p.uf2")
    r = midge("flash", "--board", "rpi-pico-w", "--firmware", tmp_path / "p.uf2", "--drive", rp2350)
    assert r.returncode == 2 and "is a RP2350 bootloader, the board needs RPI-RP2" in r.stderr
    r = midge("flash", "--board", "rpi-pico-w", "--firmware", tmp_path / "p.uf2", "--drive", other)
    assert r.returncode == 2 and "not a BOOTSEL drive" in r.stderr


def test_uf2_copy_then_wait_for_repl(vboard, tmp_path):  # noqa: F811
    drive = fake_drive(tmp_path / "RP2350", "RP2350")
    fw = uf2_file(tmp_path / "pico2.uf2", family=RP2350, nblocks=8)
    r = midge("flash", "--board", "rpi-pico2-w", "--firmware", fw, "--drive", drive, "--dry-run")
    assert (
        r.returncode == 0 and "would copy" in r.stdout and not os.path.exists(drive / "pico2.uf2")
    )
    r = midge(
        "flash",
        "--board",
        "rpi-pico2-w",
        "--firmware",
        fw,
        "--drive",
        drive,
        "--port",
        vboard.device,
    )
    assert r.returncode == 0, r.stderr
    assert (drive / "pico2.uf2").read_bytes() == fw.read_bytes()
    assert "REPL answered after" in r.stdout
    r = midge(
        *("flash", "--board", "rpi-pico2-w", "--firmware", fw, "--drive", drive),
        "--port",
        str(tmp_path / "gone"),
        "--wait",
        "1",
    )
    assert r.returncode == 2 and "the REPL did not come back within 1 s" in r.stderr

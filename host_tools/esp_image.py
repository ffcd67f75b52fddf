"""Check an ESP32-family firmware file before esptool writes it (`esptool image-info` reports
a bad checksum or another chip's image but still exits 0).

The file is what gets written at the board's flash offset: MicroPython's ESP32 .bin starts
with the second-stage bootloader image; when it is a merged file that also holds the app at
flash 0x10000, that image is checked too. Each image: magic 0xE9, chip id of the extended
header, segment layout, the XOR checksum and, when appended, the SHA-256 digest."""

import hashlib
import struct

from host_tools.cli import CLIError

MAGIC = 0xE9
CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c2": 12, "esp32c6": 13}
APP_OFFSET = 0x10000  # where MicroPython's partition table puts the app


def check_image(data, chip, where="image"):
    """Validate one image at the start of data; return its length in bytes."""
    if len(data) < 24:
        raise CLIError("%s: too short for an ESP image (%d bytes)" % (where, len(data)))
    if data[0] != MAGIC:
        raise CLIError(
            "%s: not an ESP firmware image (first byte 0x%02X, expected 0xE9)" % (where, data[0])
        )
    nseg = data[1]
    chip_id = struct.unpack_from("<H", data, 12)[0]
    want = CHIP_IDS.get(chip)
    if want is None:
        raise CLIError("no ESP image rules for chip %r" % chip)
    if chip_id != want:
        names = {v: k for k, v in CHIP_IDS.items()}
        raise CLIError(
            "%s: built for %s (chip id %d), the board is %s"
            % (where, names.get(chip_id, "an unknown chip"), chip_id, chip)
        )
    hash_appended = data[23] == 1
    pos, checksum = 24, 0xEF
    for i in range(nseg):
        if pos + 8 > len(data):
            raise CLIError("%s: truncated in segment %d header" % (where, i))
        size = struct.unpack_from("<I", data, pos + 4)[0]
        pos += 8
        if pos + size > len(data):
            raise CLIError("%s: segment %d runs past the end of the file (truncated?)" % (where, i))
        for b in data[pos : pos + size]:
            checksum ^= b
        pos += size
    pos += 15 - (pos % 16)  # the checksum byte ends a 16-byte block
    if pos >= len(data):
        raise CLIError("%s: truncated before its checksum" % where)
    if data[pos] != checksum:
        raise CLIError(
            "%s: checksum mismatch (0x%02X stored, 0x%02X computed): corrupted file"
            % (where, data[pos], checksum)
        )
    pos += 1
    if hash_appended:
        if pos + 32 > len(data):
            raise CLIError("%s: truncated SHA-256 digest" % where)
        if hashlib.sha256(data[:pos]).digest() != data[pos : pos + 32]:
            raise CLIError("%s: SHA-256 digest mismatch: corrupted file" % where)
        pos += 32
    return pos


def check_file(path, chip, flash_offset, flash_size=None):
    """Validate a firmware file for chip written at flash_offset; return a one-line summary."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CLIError("%s: cannot read (%s)" % (path, e.strerror)) from None
    if flash_size and flash_offset + len(data) > flash_size:
        raise CLIError(
            "%s: %d bytes at 0x%X do not fit the board's %d MB flash"
            % (path, len(data), flash_offset, flash_size // (1024 * 1024))
        )
    n = check_image(data, chip, path)
    parts = ["%s image ok (%d bytes)" % (chip, n)]
    app = APP_OFFSET - flash_offset
    if 0 < app < len(data) and data[app] == MAGIC:
        m = check_image(data[app:], chip, "%s (app at 0x%X)" % (path, APP_OFFSET))
        parts.append("app at 0x%X ok (%d bytes)" % (APP_OFFSET, m))
    return ", ".join(parts)

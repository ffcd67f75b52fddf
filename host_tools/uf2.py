"""UF2 files (Raspberry Pi Pico boards): validation and the BOOTSEL drive.

A UF2 file is 512-byte blocks: magic "UF2\\n" 0x0A324655, 0x9E5D5157, flags, target address,
payload size, block number, block count, family id, 476 data bytes, end magic 0x0AB16F30.
The bootloader shows up as a USB drive (RPI-RP2 for RP2040, RP2350) holding INFO_UF2.TXT;
copying the file onto it flashes the board, which then reboots and the drive goes away."""

import os
import struct

from host_tools.cli import CLIError

MAGIC0, MAGIC1, MAGIC_END = 0x0A324655, 0x9E5D5157, 0x0AB16F30
FLAG_NOT_MAIN_FLASH, FLAG_FAMILY = 0x1, 0x2000
FAMILY_ABSOLUTE = 0xE48BFF57  # RP2350 "absolute" block (MicroPython's erratum E10 workaround)
FAMILIES = {
    0xE48BFF56: "RP2040",
    0xE48BFF57: "absolute",
    0xE48BFF58: "data",
    0xE48BFF59: "RP2350 Arm-S",
    0xE48BFF5A: "RP2350 RISC-V",
    0xE48BFF5B: "RP2350 Arm-NS",
}
FLASH_BASE = 0x10000000
BOARD_IDS = {0xE48BFF56: "RPI-RP2", 0xE48BFF59: "RP2350"}


def check(data, family, flash_size, where="firmware"):
    """Validate UF2 bytes for a board whose images have family id `family`; return a summary."""
    if not data or len(data) % 512:
        raise CLIError(
            "%s: %d bytes is not a whole number of 512-byte UF2 blocks" % (where, len(data))
        )
    counts = {}
    for i in range(len(data) // 512):
        m0, m1, flags, addr, size, blockno, nblocks, fam = struct.unpack_from("<8I", data, i * 512)
        if (
            m0 != MAGIC0
            or m1 != MAGIC1
            or struct.unpack_from("<I", data, i * 512 + 508)[0] != MAGIC_END
        ):
            raise CLIError("%s: block %d has bad UF2 magic numbers (not a UF2 file?)" % (where, i))
        if not flags & FLAG_FAMILY:
            raise CLIError("%s: block %d has no family id" % (where, i))
        if fam not in (family, FAMILY_ABSOLUTE):
            raise CLIError(
                "%s: built for %s (family 0x%08X), the board needs %s (0x%08X)"
                % (where, FAMILIES.get(fam, "another chip"), fam, FAMILIES.get(family, "?"), family)
            )
        if size > 476:
            raise CLIError("%s: block %d payload of %d bytes (max 476)" % (where, i, size))
        seen = counts.setdefault(fam, [0, nblocks])
        if blockno != seen[0] or nblocks != seen[1]:
            raise CLIError(
                "%s: block %d is numbered %d of %d (expected %d of %d): truncated or mixed file"
                % (where, i, blockno, nblocks, seen[0], seen[1])
            )
        seen[0] += 1
        if fam == family and not flags & FLAG_NOT_MAIN_FLASH:
            if addr < FLASH_BASE or addr + size > FLASH_BASE + flash_size:
                raise CLIError(
                    "%s: block %d writes 0x%08X, outside the board's flash" % (where, i, addr)
                )
    for got, total in counts.values():
        if got != total:
            raise CLIError("%s: %d of %d blocks present: truncated file" % (where, got, total))
    if family not in counts:
        raise CLIError("%s: no blocks for %s" % (where, FAMILIES.get(family, hex(family))))
    return "UF2 ok: %d blocks for %s" % (counts[family][1], FAMILIES.get(family, hex(family)))


def check_file(path, family, flash_size):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CLIError("%s: cannot read (%s)" % (path, e.strerror)) from None
    return check(data, family, flash_size, path)


def board_id(drive):
    """The Board-ID line of drive/INFO_UF2.TXT, or None when it is not a UF2 drive."""
    try:
        with open(os.path.join(drive, "INFO_UF2.TXT")) as f:
            for line in f:
                if line.startswith("Board-ID:"):
                    return line.split(":", 1)[1].strip()
        return ""
    except OSError:
        return None


def mount_points():
    """Mounted folders where a BOOTSEL drive may appear (Linux /proc/mounts, macOS /Volumes)."""
    out = []
    try:
        with open("/proc/mounts") as f:
            for line in f:
                p = line.split()[1].replace("\\040", " ")
                if p.startswith(("/media", "/run/media", "/mnt")):
                    out.append(p)
    except OSError:
        pass
    if os.path.isdir("/Volumes"):
        out += [os.path.join("/Volumes", n) for n in sorted(os.listdir("/Volumes"))]
    return out


def find_drive(family, candidates=None):
    """The one mounted BOOTSEL drive for this chip family; a clear error for none or several."""
    want = BOARD_IDS.get(family, "")
    found = []
    for d in mount_points() if candidates is None else candidates:
        bid = board_id(d)
        if bid is not None and (not want or bid.startswith(want)):
            found.append(d)
    if not found:
        raise CLIError(
            "no %s drive found: hold BOOTSEL while plugging the board in (or run `mpremote bootloader`)"
            % (want or "UF2")
        )
    if len(found) > 1:
        raise CLIError("several %s drives (%s): pick one with --drive" % (want, ", ".join(found)))
    return found[0]


def copy_to_drive(path, drive):
    """Copy the UF2 onto the drive and flush it to the device; return the destination."""
    dest = os.path.join(drive, os.path.basename(path))
    with open(path, "rb") as src, open(dest, "wb") as out:
        out.write(src.read())
        out.flush()
        os.fsync(out.fileno())
    return dest

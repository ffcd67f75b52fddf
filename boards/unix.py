# The virtual board: MicroPython's unix port behind a pty (host_tools/vboard.py), a host
# folder as its flash. No LED, no Wi-Fi (the host's loopback is already up), no watchdog.
BOARD = {
    "name": "unix",
    "chip": "unix",
    "format": "none",
    "flash_offset": None,
    "uf2_family": None,
    "mpy_arch": None,  # bytecode .mpy only
    "heap": 128 * 1024,
    "flash_size": 2 * 1024 * 1024,
    "led_pin": None,
    "led_kind": None,
    "sensor_pins": {},
    "temp_sensor": None,  # simulated readings
    "wifi": False,
    "watchdog_ms": None,
}

# Raspberry Pi Pico 2 W (RP2350 + CYW43439, MicroPython RPI_PICO2_W firmware, Arm cores).
BOARD = {
    "name": "rpi-pico2-w",
    "chip": "rp2350",
    "format": "uf2",
    "flash_offset": 0x10000000,
    "uf2_family": 0xE48BFF59,  # RP2350 Arm secure image (what MicroPython builds)
    "mpy_arch": "armv7emsp",  # Cortex-M33 with single-precision FPU
    "heap": 400 * 1024,
    "flash_size": 4 * 1024 * 1024,
    "led_pin": "LED",
    "led_kind": "pin",
    "sensor_pins": {"temperature": 4},
    "temp_sensor": "adc",
    "wifi": True,
    "watchdog_ms": 8000,
}

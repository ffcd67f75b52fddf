# Raspberry Pi Pico W (RP2040 + CYW43439, MicroPython RPI_PICO_W firmware).
BOARD = {
    "name": "rpi-pico-w",
    "chip": "rp2040",
    "format": "uf2",
    "flash_offset": 0x10000000,  # XIP flash base the UF2 blocks target
    "uf2_family": 0xE48BFF56,  # RP2040
    "mpy_arch": "armv6m",  # Cortex-M0+
    "heap": 160 * 1024,
    "flash_size": 2 * 1024 * 1024,
    "led_pin": "LED",  # wired to the Wi-Fi chip, named pin
    "led_kind": "pin",
    "sensor_pins": {"temperature": 4},  # ADC channel 4 = the die temperature sensor
    "temp_sensor": "adc",
    "wifi": True,
    "watchdog_ms": 8000,  # the RP2040 watchdog tops out at 8388 ms
}

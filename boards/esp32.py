# Generic ESP32 (ESP32-WROOM/WROVER DevKit, MicroPython ESP32_GENERIC firmware).
# Read by the host tools (runpy) and by the firmware on the board (import boards.esp32).
BOARD = {
    "name": "esp32",
    "chip": "esp32",
    "format": "esptool",
    "flash_offset": 0x1000,  # the ESP32 bootloader sits at 0x1000
    "uf2_family": None,
    "mpy_arch": "xtensawin",
    "heap": 100 * 1024,  # what gc.mem_free() leaves after boot, without PSRAM
    "flash_size": 4 * 1024 * 1024,
    "led_pin": 2,
    "led_kind": "pin",
    "sensor_pins": {},  # temperature: the die sensor through esp32.raw_temperature()
    "temp_sensor": "esp32",
    "wifi": True,
    "watchdog_ms": 8000,
}

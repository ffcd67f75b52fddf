# ESP32-S3 (DevKitC-1, MicroPython ESP32_GENERIC_S3 firmware).
BOARD = {
    "name": "esp32s3",
    "chip": "esp32s3",
    "format": "esptool",
    "flash_offset": 0x0,  # S3, C3 and later chips boot from 0x0
    "uf2_family": None,
    "mpy_arch": "xtensawin",
    "heap": 150 * 1024,
    "flash_size": 8 * 1024 * 1024,
    "led_pin": 48,  # the on-board RGB LED is a WS2812
    "led_kind": "neopixel",
    "sensor_pins": {},  # temperature: esp32.mcu_temperature()
    "temp_sensor": "esp32",
    "wifi": True,
    "watchdog_ms": 8000,
}

# ruff: noqa: F821  (include/package are defined by MicroPython's manifest loader)
# Freeze midge and the drone app into a custom MicroPython firmware build, e.g.
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/midge/firmware/manifest.py
#   make -C ports/rp2 BOARD=RPI_PICO_W FROZEN_MANIFEST=/path/to/midge/firmware/manifest.py
# Paths are relative to this file. boot.py, main.py and config.json stay on the filesystem
# (`midge deploy` / `midge provision` write them), so a frozen image still boots your config.
include("$(PORT_DIR)/boards/manifest.py")  # the port's own frozen modules (asyncio, neopixel...)
package("midge", base_path="../lib")
package("app")
package("boards", base_path="..")

# ruff: noqa: F821  (include/package are defined by MicroPython's manifest loader)
# Freeze midge and the drone app into a custom MicroPython firmware build, e.g.
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/midge/firmware/manifest.py
#   make -C ports/rp2 BOARD=RPI_PICO_W FROZEN_MANIFEST=/path/to/midge/firmware/manifest.py
# The loader runs this file with its own folder as the working directory. boot.py, main.py
# and config.json stay on the filesystem (`midge deploy` / `midge provision` write them).
import os

HOST_ONLY = ("broker_fast.py",)  # CPython's asyncio Protocol driver: no use on a board

include("$(PORT_DIR)/boards/manifest.py")  # the port's own frozen modules (asyncio, neopixel...)
midge = sorted(f for f in os.listdir("../lib/midge") if f.endswith(".py") and f not in HOST_ONLY)
package("midge", files=midge, base_path="../lib")
package("app")
package("boards", base_path="..")

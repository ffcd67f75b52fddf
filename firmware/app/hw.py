# Board hardware behind small objects: status LED, watchdog, die temperature sensor.
# machine/neopixel/esp32 are imported here only, lazily, for boards that have the part,
# so the unix port (the virtual board) runs the app without them.


class Led:
    """The status LED; does nothing on a board without one."""

    def __init__(self, board):
        self.pin = None
        self.px = None
        self.state = 0
        pin = board.get("led_pin")
        if pin is None:
            return
        import machine

        p = machine.Pin(pin, machine.Pin.OUT)
        if board.get("led_kind") == "neopixel":
            try:
                import neopixel
            except ImportError:  # a virtual board standing in for one: no LED
                return
            self.px = neopixel.NeoPixel(p, 1)
        else:
            self.pin = p
        self.set(0)

    def set(self, on):
        self.state = 1 if on else 0
        if self.pin is not None:
            self.pin.value(self.state)
        elif self.px is not None:
            self.px[0] = (0, 16, 0) if on else (0, 0, 0)  # dim green
            self.px.write()

    def toggle(self):
        self.set(not self.state)


def watchdog(board):
    """Start the board's watchdog (it cannot be stopped again); None where there is none."""
    if not board.get("watchdog_ms"):
        return None
    import machine

    return machine.WDT(timeout=board["watchdog_ms"])


def sensor_sources(board):
    """Board readings for Drone: {kind: fn(elapsed_ms) -> float}; kinds left out are simulated."""
    kind = board.get("temp_sensor")
    if kind == "adc":
        import machine

        adc = machine.ADC(board["sensor_pins"]["temperature"])
        # RP2040/RP2350 datasheet: 27 °C at 0.706 V, -1.721 mV per °C; 3.3 V reference
        return {"temperature": lambda t: 27 - (adc.read_u16() * 3.3 / 65535 - 0.706) / 0.001721}
    if kind == "esp32":
        try:
            import esp32  # pyright: ignore[reportMissingImports]  (Espressif boards only)
        except ImportError:  # a virtual board standing in for an ESP32: simulated
            return {}

        mcu = getattr(esp32, "mcu_temperature", None)  # S3/C3: °C; the classic ESP32: °F only
        if mcu:
            return {"temperature": lambda t: float(mcu())}
        return {"temperature": lambda t: (esp32.raw_temperature() - 32) / 1.8}
    return {}

# The virtual board's `machine` module (host_tools/vboard.py puts it ahead of the unix port's
# built-in one). Resets end the interpreter with an exit code the bridge turns into a restart.
import os
import sys
import time

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# exit codes understood by the bridge (host_tools/vboard.py)
_EXIT_HARD = 0x5E
_EXIT_WDT = 0x57
_EXIT_DEEPSLEEP = 0x5D

_CAUSES = {"power": PWRON_RESET, "hard": HARD_RESET, "wdt": WDT_RESET, "deepsleep": DEEPSLEEP_RESET}


def reset_cause():
    return _CAUSES.get(os.getenv("MIDGE_VBOARD_RESET"), PWRON_RESET)


def reset():
    sys.exit(_EXIT_HARD)


def soft_reset():
    raise SystemExit


def deepsleep(ms=0):
    if ms:
        time.sleep_ms(ms)
    sys.exit(_EXIT_DEEPSLEEP)


def lightsleep(ms=0):
    if ms:
        time.sleep_ms(ms)


def idle():
    pass


def freq(hz=None):
    return 240000000


def unique_id():
    uid = os.getenv("MIDGE_VBOARD_UID") or "0000000000"
    return bytes(int(uid[i : i + 2], 16) for i in range(0, len(uid) - 1, 2))


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2
    _levels = {}

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        if value is not None:
            Pin._levels[id] = 1 if value else 0

    def init(self, mode=-1, pull=-1, value=None):
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return Pin._levels.get(self.id, 0)
        Pin._levels[self.id] = 1 if v else 0

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def toggle(self):
        self.value(1 - self.value())

    def irq(self, handler=None, trigger=3):
        return None


class ADC:
    """Reads a simulated 25-26 C on the RP2 temperature channel formula, mid-scale elsewhere."""

    def __init__(self, pin, atten=None):
        self.pin = pin

    def read_u16(self):
        t = 25.0 + (time.ticks_ms() % 60000) / 60000.0
        volts = 0.706 - (t - 27.0) * 0.001721
        return int(volts / 3.3 * 65535)

    def read(self):
        return self.read_u16() >> 4


_wdt_pipe = None  # one file object for the pipe (a second one would close the fd when freed)


class WDT:
    """Watchdog. Like a board's, it runs on its own: the virtual board's bridge
    (host_tools/vboard.py) keeps the deadline and resets the board when `timeout` ms pass
    without a feed, also while the program is stuck or sits at the REPL. It learns about the
    arming and every feed through the pipe named by MIDGE_VBOARD_WDT_FD."""

    def __init__(self, id=0, timeout=5000):
        global _wdt_pipe
        self.timeout = timeout
        fd = os.getenv("MIDGE_VBOARD_WDT_FD")
        if _wdt_pipe is None and fd:
            _wdt_pipe = open(int(fd), "wb")
        self._tell(b"A%d\n" % timeout)

    def feed(self):
        self._tell(b"F\n")

    def _tell(self, msg):
        if _wdt_pipe is not None:
            try:
                _wdt_pipe.write(msg)
            except OSError:  # the bridge is stopping the board
                pass

# The drone's sensor logic, sans I/O: time comes in as ticks_ms values, readings go out as
# (topic, payload) pairs. The runner owns the clock, the client and the hardware.
import math

from midge.compat import ticks_add, ticks_diff

FLIGHT_MS = 120000  # one simulated flight: climb, cruise, descend, then again
CYCLE_MS = 600000  # both simulations repeat after this: elapsed time is kept modulo it


def altitude_at(t_ms):
    """Simulated altitude in metres along a repeating flight profile (t in ms)."""
    t = (t_ms % FLIGHT_MS) / 1000
    if t < 20:
        return 5.0 * t  # climb to 100 m
    if t < 100:
        return 100.0 + 8.0 * math.sin((t - 20) * 2 * math.pi / 40)  # cruise
    return 5.0 * (120 - t)  # descend


def temperature_at(t_ms):
    """Simulated air temperature in °C: a slow swing around 21 °C."""
    return 21.0 + 3.0 * math.sin(t_ms * 2 * math.pi / CYCLE_MS)


class Noise:
    """A small deterministic generator (16-bit xorshift) for sensor jitter: same seed, same
    series. Every value stays a small int on a 32-bit board: no heap per reading."""

    def __init__(self, seed):
        self.state = (seed & 0xFFFF) or 1

    def next(self, span):
        """A value in [-span, span)."""
        x = self.state
        x ^= (x << 7) & 0xFFFF
        x ^= x >> 9
        x ^= (x << 8) & 0xFFFF
        self.state = x
        return (x / 0x8000 - 1.0) * span


class Drone:
    """Publishes sensors/<id>/<kind> every interval_ms.

    sources maps a kind to a function of the elapsed ms returning a float (a board sensor);
    a kind without one is simulated, with a little noise.
    """

    def __init__(self, sensor_id, kinds, interval_ms, now, sources=None):
        self.interval = interval_ms
        self.status_topic = "sensors/%s/status" % sensor_id
        self.last = now
        self.elapsed = 0  # ms since start, modulo CYCLE_MS (ticks_diff wraps after days)
        self.due = now  # first readings at once
        seed = 0
        for c in sensor_id:  # each drone its own jitter, the same on every run
            seed = (seed * 31 + ord(c)) & 0xFFFF
        noise = Noise(seed)
        sim = {
            "altitude": lambda t: max(0.0, altitude_at(t) + noise.next(0.3)),
            "temperature": lambda t: temperature_at(t) + noise.next(0.05),
        }
        sources = sources or {}
        self.channels = [
            ("sensors/%s/%s" % (sensor_id, k), sources.get(k) or sim[k]) for k in kinds
        ]

    def wait_ms(self, now):
        """Milliseconds until the next readings are due (0 = now)."""
        return max(0, ticks_diff(self.due, now))

    def poll(self, now):
        """The readings due at `now` as a list of (topic, payload bytes); [] when not due."""
        if ticks_diff(now, self.due) < 0:
            return []
        # keep the cadence, but after a long stall (reconnect) start afresh instead of bursting
        self.due = ticks_add(self.due, self.interval)
        if ticks_diff(now, self.due) >= 0:
            self.due = ticks_add(now, self.interval)
        self.elapsed = (self.elapsed + ticks_diff(now, self.last)) % CYCLE_MS
        self.last = now
        t = self.elapsed
        out = []
        for topic, src in self.channels:
            out.append((topic, ("%.1f" % src(t)).encode()))
        return out

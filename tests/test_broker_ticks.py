# Broker core timing across a 32-bit board's tick wrap (period 2**30 ms), on both runtimes:
# the core is given a board's ticks_add/ticks_diff (brokerpeer.board_clock), which refuse the
# out-of-range values a raw `now + delay` makes near the wrap.
import support
from brokerpeer import BOARD_PERIOD, Peer, board_clock, board_ticks_add
from midge import broker_core
from midge import codec as C


def test_keepalive_and_sys_interval_across_the_tick_wrap():
    restore = board_clock(broker_core)
    try:
        t0 = BOARD_PERIOD - 10000
        b = broker_core.Broker({"sys_interval": 10}, now=t0)
        mon = Peer(b, "mon", now=t0)
        mon.sub("$SYS/broker/uptime")
        live = Peer(b, "live", now=t0, keepalive=10)
        idle = Peer(b, "idle", now=t0, keepalive=10)
        closed_at = None
        for t in range(0, 61000, 1000):
            now = board_ticks_add(t0, t)
            if t % 5000 == 0:
                live.send(C.Simple(support.PINGREQ), now)
                mon.send(C.Simple(support.PINGREQ), now)
            b.tick(now)
            if idle.closed and closed_at is None:
                closed_at = t
        assert now < t0  # the clock wrapped
        assert closed_at == 16000  # > 1.5 x 10 s idle, 6 s after the wrap
        assert not live.closed and not mon.closed
        ups = [g.payload for g in mon.pubs()]
        assert ups == [b"%d seconds" % s for s in range(0, 61, 10)], ups
    finally:
        restore()


def test_uptime_and_session_expiry_longer_than_half_the_tick_period():
    # a board's ticks_diff spans 2**29 ms (6.2 days): a week is counted in seconds
    restore = board_clock(broker_core)
    try:
        t0 = BOARD_PERIOD - 5000
        week = 7 * 86400
        b = broker_core.Broker({"sys_interval": 0, "persistent_client_expiration": week}, now=t0)
        s = Peer(b, "s", now=t0, clean_session=False)
        s.sub("k")
        b.closed(s.c, t0)
        now = t0
        for step in range(1, week // 100 + 1):  # a tick every 100 s
            now = board_ticks_add(now, 100000)
            b.tick(now)
            if step == week // 100 - 1:
                assert "s" in b.sessions
        assert "s" not in b.sessions
        assert dict(b.sys_values(now))["uptime"] == "%d seconds" % week
    finally:
        restore()

# Wi-Fi station join with bounded retries and exponential backoff. Boards without Wi-Fi
# (the unix virtual board reaches the host's loopback directly) never import `network`.
from midge.compat import sleep_ms, ticks_diff, ticks_ms

ATTEMPTS = 5
ATTEMPT_MS = 15000  # one association + DHCP; typical joins take 2-5 s


class WifiError(Exception):
    pass


def backoff_ms(attempt, base=1000, cap=16000):
    """Pause after failed attempt number `attempt` (0-based): 1 s, 2 s, 4 s ... capped."""
    return min(cap, base << attempt)


def join(ssid, password, attempts=ATTEMPTS, log=print):
    """Join `ssid`; return the IP address, or raise WifiError after `attempts` tries."""
    if not ssid:
        raise WifiError("wifi.ssid is missing from the config")
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    wrong_pw = getattr(network, "STAT_WRONG_PASSWORD", None)
    for attempt in range(attempts):
        if wlan.isconnected():
            return wlan.ifconfig()[0]
        log("wifi: joining %s (attempt %d of %d)" % (ssid, attempt + 1, attempts))
        wlan.connect(ssid, password)
        start = ticks_ms()
        # the network module has no "connected" event: poll its status
        while not wlan.isconnected() and ticks_diff(ticks_ms(), start) < ATTEMPT_MS:
            if wrong_pw is not None and wlan.status() == wrong_pw:
                raise WifiError("wifi: wrong password for %s" % ssid)
            sleep_ms(100)
        if wlan.isconnected():
            return wlan.ifconfig()[0]
        wlan.disconnect()
        if attempt + 1 < attempts:
            sleep_ms(backoff_ms(attempt))
    raise WifiError("wifi: could not join %s after %d attempts" % (ssid, attempts))

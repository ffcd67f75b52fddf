# Topic names and topic filters (MQTT 3.1.1 section 4.7), for the client and the broker.
# The broker's subscription index (a trie) is broker_sess.TopicIndex: a client never loads it.
from midge.codec import MQTTError


def _too_long(s):
    return len(s) > 16383 and len(s.encode()) > 65535  # a UTF-8 string's limit (1.5.3)


def check_topic(name):
    """Raise MQTTError unless name is a valid topic name for PUBLISH."""
    if not name or "+" in name or "#" in name or "\x00" in name or _too_long(name):
        raise MQTTError("invalid topic name %r" % name[:64])


def check_filter(filt):
    """Raise MQTTError unless filt is a valid topic filter: '#' only as the whole last
    level, '+' only as a whole level, at least one character, no U+0000."""
    if not filt or "\x00" in filt or _too_long(filt):
        raise MQTTError("invalid topic filter %r" % filt[:64])
    if "+" not in filt and "#" not in filt:
        return
    levels = filt.split("/")
    last = len(levels) - 1
    for i, lv in enumerate(levels):
        if ("#" in lv and (lv != "#" or i != last)) or ("+" in lv and lv != "+"):
            raise MQTTError("bad wildcard in topic filter %r" % filt)


def matches(filt, name):
    """True when topic name matches topic filter (both assumed valid).

    A '$' topic is not matched by a filter that starts with '+' or '#' (4.7.2).
    """
    if name[:1] == "$" and filt[:1] in ("+", "#"):
        return False
    if filt == name:
        return True
    fl = filt.split("/")
    nl = name.split("/")
    n = len(nl)
    for i, f in enumerate(fl):
        if f == "#":
            return True
        if i >= n or (f != "+" and f != nl[i]):
            return False
    return len(fl) == n

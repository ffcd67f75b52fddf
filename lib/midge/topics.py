# Topic names, topic filters and the broker's subscription index (MQTT 3.1.1 section 4.7).
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


class TopicIndex:
    """Subscriptions in a trie with '+' and '#' branches.

    A lookup visits at most a few nodes per level of the topic, however many subscriptions
    there are. Each node is a list [children, subscribers]: children maps a level to a node,
    subscribers maps a key (a session) to the granted QoS.
    """

    def __init__(self):
        self._root = [{}, {}]
        self._count = 0
        self.visits = 0  # nodes looked at by match(): a cost figure for tests and benches

    def __len__(self):
        return self._count

    def add(self, filt, key, qos):
        """Subscribe key to filt with qos; True when new, False when it replaced a QoS."""
        node = self._root
        for level in filt.split("/"):
            children = node[0]
            nxt = children.get(level)
            if nxt is None:
                nxt = children[level] = [{}, {}]
            node = nxt
        subs = node[1]
        new = key not in subs
        subs[key] = qos
        if new:
            self._count += 1
        return new

    def remove(self, filt, key):
        """Unsubscribe key from filt; True when it was subscribed. Empty branches are pruned."""
        path = []
        node = self._root
        for level in filt.split("/"):
            nxt = node[0].get(level)
            if nxt is None:
                return False
            path.append((node, level))
            node = nxt
        if key not in node[1]:
            return False
        del node[1][key]
        self._count -= 1
        while path and not node[0] and not node[1]:
            parent, level = path.pop()
            del parent[0][level]
            node = parent
        return True

    def match(self, name, out=None):
        """Every key subscribed to a filter matching name, with the highest granted QoS of
        its matching filters (overlapping subscriptions deliver once, section 3.3.5)."""
        if out is None:
            out = {}
        self._walk(self._root, name.split("/"), 0, out, name[:1] == "$")
        return out

    def _walk(self, node, levels, i, out, dollar):
        self.visits += 1
        children = node[0]
        if i == len(levels):
            _collect(node[1], out)
            h = children.get("#")  # "a/#" also matches "a"
            if h is not None:
                _collect(h[1], out)
            return
        if not (dollar and i == 0):
            h = children.get("#")
            if h is not None:
                _collect(h[1], out)
            p = children.get("+")
            if p is not None:
                self._walk(p, levels, i + 1, out, dollar)
        n = children.get(levels[i])
        if n is not None:
            self._walk(n, levels, i + 1, out, dollar)


def _collect(subs, out):
    for k in subs:
        q = subs[k]
        if out.get(k, -1) < q:
            out[k] = q

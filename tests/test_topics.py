# Topic names, topic filters, matching and the broker's subscription index, from section 4.7
# of the MQTT 3.1.1 standard (the examples of 4.7.1.2, 4.7.1.3 and 4.7.2 are used verbatim).
from midge import codec, topics
from midge.broker_sess import TopicIndex
from midge.compat import ticks_diff, ticks_ms
from support import MICROPYTHON, raises, skip

VALID_NAMES = (
    "a",
    "/",  # [4.7.3] a topic level separator alone is a valid name
    "a/b",
    "/finance",
    "a//b",  # [4.7.1.1] adjacent separators: a zero-length level
    "a/",
    "$SYS/monitor/Clients",
    "sport/tennis/player1",
    "ACCOUNTS",
    "Accounts payable",  # [4.7.3] spaces are allowed
    "t\u00e9/\u65e5\u672c",
)


def test_check_topic_accepts_valid_names():
    for n in VALID_NAMES:
        topics.check_topic(n)


def test_check_topic_rejects_invalid_names():
    for n in (
        "",  # [MQTT-4.7.3-1] at least one character
        "+",  # [MQTT-4.7.1-1] no wildcards in a topic name
        "#",
        "a/+",
        "a/#",
        "a+b",
        "sport/tennis#",
        "a\x00b",  # [MQTT-4.7.3-2] no U+0000
    ):
        e = raises(codec.MQTTError, topics.check_topic, n)
        assert e.reason, n


def test_check_filter_accepts_valid_filters():
    for f in VALID_NAMES + (
        "#",  # [4.7.1.2]
        "sport/#",
        "sport/tennis/#",
        "+",  # [4.7.1.3]
        "+/tennis/#",
        "sport/+/player1",
        "sport/+",
        "+/+",
        "/+",
        "+/",
        "+/+/+",
        "$SYS/#",
        "a//+",
    ):
        topics.check_filter(f)


def test_check_filter_rejects_invalid_filters():
    for f in (
        "",  # [MQTT-4.7.3-1]
        "sport/tennis#",  # [MQTT-4.7.1-2] '#' alone in its level and last
        "sport/tennis/#/ranking",
        "#/",
        "##",
        "a/b#",
        "sport+",  # [MQTT-4.7.1-3] '+' occupies an entire level
        "+a",
        "a/++/b",
        "a/+b",
        "a\x00",  # [MQTT-4.7.3-2]
    ):
        e = raises(codec.MQTTError, topics.check_filter, f)
        assert e.reason, f


def test_length_limit_65535_bytes():
    if MICROPYTHON:
        skip("64 KB strings do not fit the 128K test heap")
    # [MQTT-4.7.3-3] topic names and filters MUST NOT encode to more than 65535 bytes
    topics.check_topic("a" * 65535)
    raises(codec.MQTTError, topics.check_topic, "a" * 65536)
    raises(codec.MQTTError, topics.check_topic, "\u00e9" * 32768)  # 65536 UTF-8 bytes
    raises(codec.MQTTError, topics.check_filter, "a" * 65535 + "#")


# (filter, name, matches) from 4.7.1.2, 4.7.1.3, 4.7.2 and the empty-level rules
MATCH_CASES = (
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),  # '#' includes the parent level
    ("sport/#", "sport/", True),
    ("sport/#", "sports", False),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("#", "a", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),  # '+' matches an empty level
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "a", True),
    ("+/b", "/b", True),
    ("a/+/c", "a//c", True),
    ("a//c", "a//c", True),
    ("a/c", "a//c", False),
    ("a/b", "a/b/", False),
    ("a/b/", "a/b", False),
    ("+/+/+", "a/b", False),
    ("ACCOUNTS", "Accounts", False),  # case sensitive [4.7.3]
    ("Accounts payable", "Accounts payable", True),
    ("+/tennis/#", "sport/tennis", True),
    ("+/tennis/#", "sport/tennis/player1/ranking", True),
    ("+/tennis/#", "sport/golf", False),
    # [4.7.2] '$' topics are not matched by a filter starting with a wildcard
    ("#", "$SYS/monitor/Clients", False),
    ("#", "$SYS", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("+", "$SYS", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS", "$SYS", True),
    ("a/$SYS", "a/$SYS", True),
    ("+/$SYS", "a/$SYS", True),  # '$' only matters in the first level
    ("#", "a/$b", True),
)


def test_matches():
    wrong = [c for c in MATCH_CASES if topics.matches(c[0], c[1]) != c[2]]
    assert not wrong, wrong


# ------------------------------------------------------------------ TopicIndex


def test_index_add_remove_len():
    ix = TopicIndex()
    assert len(ix) == 0 and ix.match("a/b") == {}
    ix.add("a/b", "k1", 0)
    ix.add("a/+", "k1", 1)
    ix.add("a/b", "k2", 2)
    assert len(ix) == 3
    # [3.8.4] the same filter again replaces the subscription (its QoS), not a new one
    ix.add("a/b", "k1", 2)
    assert len(ix) == 3
    assert ix.match("a/b") == {"k1": 2, "k2": 2}
    assert ix.remove("a/b", "k1") is True
    assert ix.remove("a/b", "k1") is False  # already gone
    assert ix.remove("x/y", "k1") is False  # never there
    assert ix.remove("a/+", "k9") is False  # filter there, key not
    assert len(ix) == 2
    assert ix.match("a/b") == {"k1": 1, "k2": 2}
    ix.remove("a/+", "k1")
    ix.remove("a/b", "k2")
    assert len(ix) == 0 and ix.match("a/b") == {}


def test_index_overlapping_filters_give_max_qos_per_key():
    # [3.3.5] a client with overlapping subscriptions gets the message once, at the
    # maximum QoS of the matching subscriptions
    ix = TopicIndex()
    ix.add("sport/#", "A", 0)
    ix.add("sport/tennis/+", "A", 2)
    ix.add("sport/tennis/player1", "A", 1)
    ix.add("+/tennis/player1", "B", 1)
    ix.add("#", "C", 0)
    ix.add("sport/tennis/player1/#", "D", 1)  # also matches the parent level
    ix.add("sport/golf", "E", 2)
    assert ix.match("sport/tennis/player1") == {"A": 2, "B": 1, "C": 0, "D": 1}
    assert ix.match("sport") == {"A": 0, "C": 0}
    assert ix.match("sport/golf") == {"A": 0, "C": 0, "E": 2}
    assert ix.match("other") == {"C": 0}
    ix.remove("sport/tennis/+", "A")
    assert ix.match("sport/tennis/player1") == {"A": 1, "B": 1, "C": 0, "D": 1}


def test_index_dollar_topics_and_empty_levels():
    ix = TopicIndex()
    ix.add("#", "all", 0)
    ix.add("+/monitor/Clients", "plus", 0)
    ix.add("$SYS/#", "sys", 1)
    ix.add("$SYS/monitor/+", "mon", 2)
    ix.add("+/b", "empty", 1)
    ix.add("a//c", "exact", 0)
    ix.add("a/+/c", "mid", 0)
    assert ix.match("$SYS/monitor/Clients") == {"sys": 1, "mon": 2}
    assert ix.match("x/monitor/Clients") == {"all": 0, "plus": 0}
    assert ix.match("/b") == {"all": 0, "empty": 1}
    assert ix.match("a//c") == {"all": 0, "exact": 0, "mid": 0}
    assert ix.match("$SYS") == {"sys": 1}


def test_index_match_fills_the_given_dict():
    ix = TopicIndex()
    ix.add("a/#", "k", 1)
    out = {}
    assert ix.match("a/b", out) is out and out == {"k": 1}


def test_index_agrees_with_matches():
    filters = [c[0] for c in MATCH_CASES]
    names = [c[1] for c in MATCH_CASES]
    ix = TopicIndex()
    for i, f in enumerate(filters):
        ix.add(f, i, i % 3)
    for n in names:
        want = {}
        for i, f in enumerate(filters):
            if topics.matches(f, n):
                want[i] = max(want.get(i, -1), i % 3)
        assert ix.match(n) == want, n


def _fill(ix, count):
    # subscriptions that share the first level with the looked-up topic but do not match it
    for i in range(count):
        ix.add("fleet/d%d" % i, i, 0)


def test_index_lookup_work_grows_with_depth_not_subscriptions():
    small, big = TopicIndex(), TopicIndex()
    _fill(small, 10)
    n_big = 150 if MICROPYTHON else 5000  # trie nodes are heap objects: 128K heap
    _fill(big, n_big)
    for ix in (small, big):
        ix.add("fleet/+", "w", 1)
    name = "fleet/drone01"
    if hasattr(big, "visits"):
        # node visits: the same for 10 and for n_big subscriptions
        costs = []
        for ix in (small, big):
            ix.visits = 0
            assert ix.match(name) == {"w": 1}
            costs.append(ix.visits)
        assert costs[0] == costs[1], costs
        # and it grows with the depth of the topic
        deep = TopicIndex()
        deep.add("+/+/+/+/+/+/+/+", "w", 0)
        deep.visits = 0
        deep.match("a/b/c/d/e/f/g/h")
        assert costs[0] < deep.visits <= 4 * 9, (costs, deep.visits)
    # and in time, as a ratio with a wide margin (a list scan would be ~n_big/10 times slower)
    times = []
    for ix in (small, big):
        best = None
        for _ in range(3):
            t0 = ticks_ms()
            for _ in range(1000):
                ix.match(name)
            dt = ticks_diff(ticks_ms(), t0)
            best = dt if best is None else min(best, dt)
        times.append(best)
    assert times[1] <= 3 * times[0] + 5, times

# Broker core (sans-I/O, both runtimes): connect, auth, ACL and routing.
import support
from brokerpeer import Peer, connack
from midge import broker_core
from midge import codec as C
from support import raises, tmpdir


def test_connect_accepted_and_assigned_id():
    b = broker_core.Broker()
    p = Peer(b, "dev1")
    ack = connack(p)
    assert (ack.return_code, ack.session_present) == (0, False)
    q = Peer(b, "")
    assert connack(q).return_code == 0
    assert q.c.sess.cid and q.c.sess.cid != "dev1"


def test_connack_codes_1_and_2_and_first_packet_rule():
    b = broker_core.Broker()
    p = Peer(b, None)
    data = bytearray(C.encode(C.Connect("x")))
    data[8] = 5  # protocol level
    p.raw(data)
    assert connack(p).return_code == 1 and p.closed
    p = Peer(b, "", clean_session=False)
    assert connack(p).return_code == 2 and p.closed
    p = Peer(b, None)
    p.send(C.Subscribe(1, [("a", 0)]))
    assert p.closed and p.recv() == []


def test_anonymous_loopback_only_by_default():
    b = broker_core.Broker()
    assert connack(Peer(b, "far", local=False)).return_code == 5
    b = broker_core.Broker({"allow_anonymous": True})
    assert connack(Peer(b, "far", local=False)).return_code == 0
    b = broker_core.Broker({"allow_anonymous": False})
    assert connack(Peer(b, "near")).return_code == 5


def test_password_file_connack_4_and_5():
    from midge import auth  # after broker_core: smaller MicroPython heap peak

    d = tmpdir()
    path = d + "/pw"
    with open(path, "w") as f:
        f.write("drone:%s\n" % auth.hash_password("s3cret", 1000))
    b = broker_core.Broker(None, auth.Auth(path))
    assert connack(Peer(b, "a", username="drone", password=b"s3cret")).return_code == 0
    assert connack(Peer(b, "b", username="drone", password=b"wrong")).return_code == 4
    assert connack(Peer(b, "a2", username="drone", password=b"s3cret")).return_code == 0  # cached
    assert connack(Peer(b, "b2", username="drone", password=b"s3cre")).return_code == 4
    assert connack(Peer(b, "c", username="nobody", password=b"s3cret")).return_code == 4
    assert connack(Peer(b, "d")).return_code == 5  # password file: no anonymous


def test_acl_deny_on_subscribe_only_that_filter():
    from midge import auth  # after broker_core: smaller MicroPython heap peak

    d = tmpdir()
    path = d + "/acl"
    with open(path, "w") as f:
        f.write("topic read public/#\n# comment\npattern readwrite dev/%c/#\n")
    b = broker_core.Broker(None, auth.Auth(None, path))
    p = Peer(b, "d1")
    connack(p)
    p.send(C.Subscribe(7, [("public/x", 1), ("secret/#", 0), ("dev/d1/+", 2), ("dev/d2/x", 0)]))
    ack = p.recv()[0]
    assert ack.type == support.SUBACK and ack.pid == 7
    assert ack.codes == [1, 0x80, 2, 0x80]
    p.send(C.Subscribe(8, [("#", 0)]))
    assert p.recv()[0].codes == [0x80]
    # publish: denied topics are acknowledged but not routed
    p.send(C.Publish("public/x", b"no", 1, pid=3))
    assert [x.type for x in p.recv()] == [support.PUBACK]
    p.send(C.Publish("dev/d1/t", b"yes", 0))
    assert [x.payload for x in p.pubs()] == [b"yes"]


def test_wildcards_dollar_and_overlap():
    b = broker_core.Broker({"sys_interval": 0})
    s = Peer(b, "s")
    connack(s)
    acks = s.sub("a/+/c", "#", qos=1)
    assert acks[0].codes == [1, 1]
    s.send(C.Subscribe(2, [("a/b/c", 2)]))
    s.recv()
    p = Peer(b, "p")
    connack(p)
    p.send(C.Publish("a/b/c", b"1", 2, pid=1))
    got = s.pubs()
    assert len(got) == 1 and got[0].qos == 2  # one copy at the highest granted QoS
    p.send(C.Publish("$SYS/x", b"2"))
    p.send(C.Publish("x/y", b"3", 2, pid=2))
    got = s.pubs()
    assert [(g.topic, g.qos) for g in got] == [("x/y", 1)]  # min(published, granted)


def test_unsubscribe():
    b = broker_core.Broker()
    s = Peer(b, "s")
    connack(s)
    s.sub("t/#")
    s.send(C.Unsubscribe(5, ["t/#"]))
    assert s.recv()[0] == C.Ack(support.UNSUBACK, 5)
    p = Peer(b, "p")
    p.send(C.Publish("t/1", b"x"))
    assert s.pubs() == []


def test_acl_and_password_file_errors():
    from midge import auth  # after broker_core: smaller MicroPython heap peak

    d = tmpdir()
    with open(d + "/acl", "w") as f:
        f.write("topic read ok\nbogus line\n")
    e = raises(auth.AuthError, auth.Auth, None, d + "/acl")
    assert "acl:2" in str(e)
    with open(d + "/pw", "w") as f:
        f.write("user:plaintext\n")
    e = raises(auth.AuthError, auth.Auth, d + "/pw")
    assert "pw:1" in str(e)


def test_acl_user_rules_without_password_file_warn_at_start_up():
    from midge import brokerconf

    d = tmpdir()
    opts = {"config": d + "/conf", "host": None, "port": None}
    logs = []
    for acl, warned in (("topic a\npattern r/%u\n", False), ("user bob\ntopic b/#\n", True)):
        with open(d + "/acl", "w") as f:
            f.write(acl)
        with open(d + "/conf", "w") as f:
            f.write("acl_file %s/acl\nsys_interval 0\n" % d)
        del logs[:]
        core = brokerconf.setup(opts, lambda lv, m: logs.append((lv, m)))[0]
        assert len(logs) == warned
        # the claimed name still selects bob's rules, as in Mosquitto 2
        assert core.auth.allowed("bob", "c", "b/1", True) == warned
    assert logs[0][0] == broker_core.WARN
    assert "acl has `user` rules and there is no password_file" in logs[0][1]
    with open(d + "/pw", "w") as f:
        f.write("")
    with open(d + "/conf", "a") as f:
        f.write("password_file %s/pw\n" % d)
    del logs[:]
    brokerconf.setup(opts, lambda lv, m: logs.append(m))
    assert logs == []


def _acl_broker(rules):
    """A broker (no $SYS) whose ACL file holds these rules, no password file."""
    from midge import auth  # after broker_core: smaller MicroPython heap peak

    path = tmpdir() + "/acl"
    with open(path, "w") as f:
        f.write(rules)
    return broker_core.Broker({"sys_interval": 0}, auth.Auth(None, path))


def test_acl_pattern_ignores_client_ids_with_wildcards_or_slash():
    b = _acl_broker("pattern readwrite devices/%c/#\n")
    dev = Peer(b, "dev1")
    connack(dev)
    assert dev.sub("devices/dev1/#")[0].codes == [0]
    for cid in ("+", "#", "dev1/x"):
        bad = Peer(b, cid)
        assert connack(bad).return_code == 0
        bad.send(C.Subscribe(2, [("devices/dev1/#", 0), ("devices/+/cmd", 0)]))
        assert bad.recv()[0].codes == [0x80, 0x80], cid
        bad.send(C.Publish("devices/dev1/cmd", b"evil", 0))
        bad.send(C.Publish("devices/dev1/x/cmd", b"evil", 0))
        assert dev.pubs() == [], cid
    ok = Peer(b, "dev2")  # positive control: the pattern still works for a plain id
    ok.send(C.Publish("devices/dev2/cmd", b"mine", 0))
    assert ok.sub("devices/dev2/#")[0].codes == [0]
    dev.send(C.Publish("devices/dev1/cmd", b"own", 0))
    assert [g.payload for g in dev.pubs()] == [b"own"]


def test_will_to_a_topic_the_client_may_not_write_is_dropped():
    b = _acl_broker("topic read #\npattern write out/%c/#\n")
    w = Peer(b, "watch")
    w.sub("#")
    bad = Peer(b, "bad", will_topic="alarm/fire", will_payload=b"x", will_retain=True)
    assert connack(bad).return_code == 0  # as Mosquitto 2: let in, will dropped
    good = Peer(b, "good", will_topic="out/good/status", will_payload=b"gone")
    connack(good)
    b.closed(bad.c, 0)
    b.closed(good.c, 0)
    assert [(g.topic, g.payload) for g in w.pubs()] == [("out/good/status", b"gone")]
    assert "alarm/fire" not in b.retained

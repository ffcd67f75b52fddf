# Malformed input: every case must raise codec.MQTTError with a reason, and for CONNECT the
# CONNACK return code to send (or None = just close). Bytes are written by hand from the OASIS
# standard mqtt-v3.1.1-os; the section each case breaks is named next to it.
import support
from midge import codec
from support import MICROPYTHON, raises, skip

AB = b"\x00\x03a/b"  # [1.5.3] the string "a/b"


def _decode_all(d, wire):
    d.receive_data(wire)
    while d.next_packet() is not None:
        pass


def check_cases(cases, default_code=None):
    """cases: (label, wire) or (label, wire, code). Report every case that is accepted,
    raises something else, or carries the wrong code, all at once."""
    wrong = []
    for case in cases:
        label, wire = case[0], case[1]
        code = case[2] if len(case) > 2 else default_code
        d = codec.Decoder()
        try:
            _decode_all(d, wire)
            wrong.append("%s: accepted %r" % (label, wire))
            continue
        except codec.MQTTError as e:
            if not isinstance(e.reason, str) or not e.reason:
                wrong.append("%s: no reason (%r)" % (label, e.reason))
            if e.code != code:
                wrong.append("%s: code %r, expected %r" % (label, e.code, code))
        except Exception as e:  # anything else escaping the decoder is a bug too
            wrong.append("%s: raised %s %r" % (label, type(e).__name__, e))
    assert not wrong, "\n".join(wrong)


def _rl(body):
    assert len(body) < 128
    return bytes([len(body)]) + body


def connect(flags=0x02, payload=b"\x00\x07drone01", name=b"MQTT", level=4, keepalive=60):
    """A CONNECT with the given connect flags byte and payload bytes [3.1]."""
    var = bytes([0, len(name)]) + name + bytes([level, flags, keepalive >> 8, keepalive & 255])
    return b"\x10" + _rl(var + payload)


def test_fixed_header_flags():
    # [2.2.2] table 2.2: reserved flag bits must hold the listed value; invalid flags ->
    # close the connection [MQTT-2.2.2-1, MQTT-2.2.2-2]
    check_cases(
        [
            ("reserved type 0 [2.2.1]", b"\x00\x00"),
            ("reserved type 15 [2.2.1]", b"\xf0\x00"),
            ("CONNECT flags 0001 [3.1.1]", b"\x11" + connect()[1:]),
            ("CONNACK flags 1000 [3.2.1]", b"\x28\x02\x00\x00"),
            ("PUBACK flags 0001 [3.4.1]", b"\x41\x02\x00\x01"),
            ("PUBREC flags 0010 [3.5.1]", b"\x52\x02\x00\x01"),
            ("PUBREL flags 0000 [MQTT-3.6.1-1]", b"\x60\x02\x00\x01"),
            ("PUBREL flags 1010 [MQTT-3.6.1-1]", b"\x6a\x02\x00\x01"),
            ("PUBREL flags 0011 [MQTT-3.6.1-1]", b"\x63\x02\x00\x01"),
            ("PUBCOMP flags 0100 [3.7.1]", b"\x74\x02\x00\x01"),
            ("SUBSCRIBE flags 0000 [MQTT-3.8.1-1]", b"\x80\x06\x00\x01\x00\x01a\x00"),
            ("SUBSCRIBE flags 0011 [MQTT-3.8.1-1]", b"\x83\x06\x00\x01\x00\x01a\x00"),
            ("SUBSCRIBE flags 1010 [MQTT-3.8.1-1]", b"\x8a\x06\x00\x01\x00\x01a\x00"),
            ("SUBACK flags 0010 [3.9.1]", b"\x92\x03\x00\x01\x00"),
            ("UNSUBSCRIBE flags 0000 [MQTT-3.10.1-1]", b"\xa0\x05\x00\x01\x00\x01a"),
            ("UNSUBSCRIBE flags 0110 [MQTT-3.10.1-1]", b"\xa6\x05\x00\x01\x00\x01a"),
            ("UNSUBACK flags 0001 [3.11.1]", b"\xb1\x02\x00\x01"),
            ("PINGREQ flags 0010 [3.12.1]", b"\xc2\x00"),
            ("PINGRESP flags 0001 [3.13.1]", b"\xd1\x00"),
            ("DISCONNECT flags 1000 [3.14.1]", b"\xe8\x00"),
        ]
    )


def test_publish_qos3():
    # [3.3.1.2] QoS bits 11: "A PUBLISH Packet MUST NOT have both QoS bits set to 1" [MQTT-3.3.1-4]
    check_cases(
        [
            ("PUBLISH QoS 3", b"\x36\x07" + AB + b"\x00\x01"),
            ("PUBLISH QoS 3 dup retain", b"\x3f\x07" + AB + b"\x00\x01"),
        ]
    )


def test_packet_identifier_zero():
    # [2.3.1] SUBSCRIBE, UNSUBSCRIBE and PUBLISH with QoS > 0 MUST carry a non-zero packet
    # identifier [MQTT-2.3.1-1]; the acknowledgements echo that identifier, so 0 is never valid
    check_cases(
        [
            ("PUBLISH QoS 1 id 0", b"\x32\x07" + AB + b"\x00\x00"),
            ("PUBLISH QoS 2 id 0", b"\x34\x07" + AB + b"\x00\x00"),
            ("SUBSCRIBE id 0", b"\x82\x06\x00\x00\x00\x01a\x00"),
            ("UNSUBSCRIBE id 0", b"\xa2\x05\x00\x00\x00\x01a"),
            ("PUBACK id 0", b"\x40\x02\x00\x00"),
            ("PUBREC id 0", b"\x50\x02\x00\x00"),
            ("PUBREL id 0", b"\x62\x02\x00\x00"),
            ("PUBCOMP id 0", b"\x70\x02\x00\x00"),
            ("SUBACK id 0", b"\x90\x03\x00\x00\x00"),
            ("UNSUBACK id 0", b"\xb0\x02\x00\x00"),
        ]
    )


def test_publish_topic_name_rules():
    check_cases(
        [
            # [MQTT-3.3.2-2] / [MQTT-4.7.1-1]: no wildcard characters in a topic name
            ("topic a/+", b"\x30\x05\x00\x03a/+"),
            ("topic a/#", b"\x30\x05\x00\x03a/#"),
            ("topic +", b"\x30\x03\x00\x01+"),
            ("topic #", b"\x30\x03\x00\x01#"),
            ("topic a+b", b"\x30\x05\x00\x03a+b"),
            # [MQTT-4.7.3-1]: topic names are at least one character long
            ("empty topic", b"\x30\x02\x00\x00"),
            ("empty topic with payload", b"\x30\x04\x00\x00hi"),
            ("empty topic QoS 1", b"\x32\x04\x00\x00\x00\x01"),
        ]
    )


def test_subscribe_payload_rules():
    check_cases(
        [
            # [MQTT-3.8.3-3]: at least one topic filter / QoS pair
            ("SUBSCRIBE without filters", b"\x82\x02\x00\x01"),
            # [MQTT-3.10.3-2]: at least one topic filter
            ("UNSUBSCRIBE without filters", b"\xa2\x02\x00\x01"),
            # [MQTT-3-8.3-4]: reserved bits 7-2 of the requested QoS byte, or QoS 3
            ("requested QoS 0x04", b"\x82\x06\x00\x01\x00\x01a\x04"),
            ("requested QoS 0x81", b"\x82\x06\x00\x01\x00\x01a\x81"),
            ("requested QoS 0xfc", b"\x82\x06\x00\x01\x00\x01a\xfc"),
            ("requested QoS 3", b"\x82\x06\x00\x01\x00\x01a\x03"),
            ("second filter QoS 0x40", b"\x82\x0a\x00\x01\x00\x01a\x01\x00\x01b\x40"),
            # [3.8.3] every filter is followed by its QoS byte
            ("filter without QoS byte", b"\x82\x06\x00\x01\x00\x02ab"),
            # [MQTT-4.7.3-1]: topic filters are at least one character long
            ("empty SUBSCRIBE filter", b"\x82\x05\x00\x01\x00\x00\x00"),
            ("empty UNSUBSCRIBE filter", b"\xa2\x04\x00\x01\x00\x00"),
            # [MQTT-4.7.1-2] '#' last and alone; [MQTT-4.7.1-3] '+' a whole level; a
            # protocol violation closes the connection [4.8]
            ("filter a/#/b", b"\x82\x08\x00\x01\x00\x05a/#/b\x00"),
            ("filter a#", b"\x82\x06\x00\x01\x00\x02a#\x00"),
            ("filter a+", b"\x82\x06\x00\x01\x00\x02a+\x00"),
            ("unsubscribe filter +a/b", b"\xa2\x07\x00\x01\x00\x04+a/b"),
        ]
    )


def test_suback_return_codes():
    check_cases(
        [
            # [MQTT-3.9.3-2]: codes other than 0x00, 0x01, 0x02, 0x80 are reserved
            ("SUBACK code 3", b"\x90\x03\x00\x01\x03"),
            ("SUBACK code 0x81", b"\x90\x03\x00\x01\x81"),
            # [3.9.3] one return code per topic filter of the SUBSCRIBE, which has >= 1
            ("SUBACK without codes", b"\x90\x02\x00\x01"),
        ]
    )


def test_connack_rules():
    check_cases(
        [
            # [3.2.2.1] connect acknowledge flags bits 7-1 are reserved, set to 0
            ("CONNACK ack flags 0x02", b"\x20\x02\x02\x00"),
            # [3.2.2.3] return codes 6-255 are reserved
            ("CONNACK return code 6", b"\x20\x02\x00\x06"),
            # [MQTT-3.2.2-4] a refusal MUST have session present 0
            ("CONNACK refused with session present", b"\x20\x02\x01\x05"),
        ]
    )


# ------------------------------------------------------------------ UTF-8 (1.5.3)

# Ill-formed UTF-8 [MQTT-1.5.3-1] and U+0000 [MQTT-1.5.3-2]; each is the content of a string.
BAD_UTF8 = (
    ("overlong '/' C0 AF", b"\xc0\xaf"),
    ("overlong NUL C0 80", b"\xc0\x80"),
    ("overlong 3-byte E0 80 AF", b"\xe0\x80\xaf"),
    ("overlong 4-byte F0 80 80 AF", b"\xf0\x80\x80\xaf"),
    ("surrogate U+D800", b"\xed\xa0\x80"),
    ("surrogate U+DFFF", b"\xed\xbf\xbf"),
    ("U+0000", b"a\x00b"),
    ("above U+10FFFF", b"\xf4\x90\x80\x80"),
    ("byte FF", b"\xff"),
    ("byte F5 lead", b"\xf5\x80\x80\x80"),
    ("lone continuation 80", b"a\x80"),
    ("truncated C3 then ASCII", b"\xc3a"),
    ("truncated E2 82 then ASCII", b"\xe2\x82a"),
    ("truncated C3 at the end", b"a\xc3"),
)


def _s(content):
    return bytes([len(content) >> 8, len(content) & 255]) + content


def test_utf8_in_publish_topic():
    check_cases([(label, b"\x30" + _rl(_s(s) + b"x")) for label, s in BAD_UTF8])


def test_utf8_in_subscribe_and_unsubscribe_filters():
    cases = []
    for label, s in BAD_UTF8:
        cases.append(("SUBSCRIBE " + label, b"\x82" + _rl(b"\x00\x01" + _s(s) + b"\x00")))
        cases.append(("UNSUBSCRIBE " + label, b"\xa2" + _rl(b"\x00\x01" + _s(s))))
    check_cases(cases)


def test_utf8_in_connect_strings():
    # the connection is closed without a CONNACK [MQTT-1.5.3-1]: code None
    cases = []
    for label, s in BAD_UTF8:
        cases.append(("client id " + label, connect(payload=_s(s))))
        cases.append(("user name " + label, connect(0x82, b"\x00\x02c1" + _s(s))))
        will = b"\x00\x02c1" + _s(s) + b"\x00\x00"
        cases.append(("will topic " + label, connect(0x06, will)))
    check_cases(cases)


def test_well_formed_utf8_edges_are_accepted():
    # Not malformed: U+FEFF is kept, not stripped [MQTT-1.5.3-3]; last code points before
    # and after the surrogates; the highest code point; noncharacters MAY be accepted.
    for s in (
        b"\xef\xbb\xbfa",  # U+FEFF then 'a'
        b"\xed\x9f\xbf",  # U+D7FF
        b"\xee\x80\x80",  # U+E000
        b"\xf4\x8f\xbf\xbf",  # U+10FFFF
        b"\xc2\x80",  # U+0080, smallest 2-byte
        b"\xe0\xa0\x80",  # U+0800, smallest 3-byte
        b"\xf0\x90\x80\x80",  # U+10000, smallest 4-byte
    ):
        d = codec.Decoder()
        d.receive_data(b"\x30" + _rl(_s(s) + b"x"))
        p = d.next_packet()
        assert p.topic.encode() == s, (s, p.topic)
        assert bytes(p.payload) == b"x"


# ------------------------------------------------------------------ CONNECT (3.1.2)


def test_connect_flag_rules_close_without_connack():
    will = b"\x00\x02c1\x00\x01w\x00\x00"  # client id, will topic "w", empty will message
    check_cases(
        [
            # [MQTT-3.1.2-3] reserved flag (bit 0) must be 0
            ("reserved flag", connect(0x03)),
            # [MQTT-3.1.2-13] will flag 0 -> will QoS 0; [MQTT-3.1.2-15] -> will retain 0
            ("will QoS 1 without will flag", connect(0x0A)),
            ("will QoS 2 without will flag", connect(0x12)),
            ("will retain without will flag", connect(0x22)),
            # [MQTT-3.1.2-14] will QoS 3 is not allowed
            ("will QoS 3", connect(0x1E, will)),
            # [MQTT-3.1.2-22] user name flag 0 -> password flag 0
            ("password without user name", connect(0x42, b"\x00\x02c1\x00\x02pw")),
            # [MQTT-3.1.3-10] the will topic is a topic name: no wildcards, not empty
            ("will topic with wildcard", connect(0x06, b"\x00\x02c1\x00\x01#\x00\x00")),
            ("empty will topic", connect(0x06, b"\x00\x02c1\x00\x00\x00\x00")),
            # [3.1.3] fields the flags announce must be present, and nothing after them
            ("will flag, no will fields", connect(0x06)),
            ("will topic, no will message", connect(0x06, b"\x00\x02c1\x00\x01w")),
            ("user name flag, no user name", connect(0x82)),
            ("password flag, no password", connect(0xC2, b"\x00\x02c1\x00\x01u")),
            ("trailing byte", connect(payload=b"\x00\x07drone01\x00")),
            ("no client id", connect(payload=b"")),
            ("client id longer than packet", connect(payload=b"\x00\x09drone01")),
            # [3.1.2] the variable header is 10 bytes
            ("short variable header", b"\x10\x08\x00\x04MQTT\x04\x02"),
            # [MQTT-3.1.2-1] another protocol name: the server may just disconnect
            ("protocol name MQTX", connect(name=b"MQTX")),
            ("protocol name mqtt", connect(name=b"mqtt")),
        ]
    )


def test_connect_unacceptable_protocol_level_gets_code_1():
    # [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01, then disconnect
    check_cases(
        [
            ("level 5", connect(level=5), 1),
            ("level 0", connect(level=0), 1),
            ("level 255", connect(level=255), 1),
            ("level 5, flags otherwise fine", connect(0x02, level=5), 1),
            ("level 5 with the bridge bit", connect(level=0x85), 1),
        ]
    )


# ------------------------------------------------------------------ lengths


def test_length_mismatches_and_trailing_bytes():
    check_cases(
        [
            # [3.4.1, 3.5.1, 3.6.1, 3.7.1, 3.11.1] remaining length is exactly 2
            ("PUBACK rl 3", b"\x40\x03\x00\x01\x00"),
            ("PUBACK rl 1", b"\x40\x01\x00"),
            ("PUBREC rl 0", b"\x50\x00"),
            ("PUBREL rl 3", b"\x62\x03\x00\x01\x00"),
            ("PUBCOMP rl 4", b"\x70\x04\x00\x01\x00\x02"),
            ("UNSUBACK rl 3", b"\xb0\x03\x00\x01\x00"),
            # [3.2.1] CONNACK remaining length is 2
            ("CONNACK rl 3", b"\x20\x03\x00\x00\x00"),
            ("CONNACK rl 1", b"\x20\x01\x00"),
            # [3.12.1, 3.13.1, 3.14.1] remaining length 0
            ("PINGREQ rl 1", b"\xc0\x01\x00"),
            ("PINGRESP rl 1", b"\xd0\x01\x00"),
            ("DISCONNECT rl 2", b"\xe0\x02\x00\x00"),
            # [3.8.3, 3.10.3] a dangling byte after the last pair / filter
            ("SUBSCRIBE dangling byte", b"\x82\x07\x00\x01\x00\x01a\x01\x00"),
            ("UNSUBSCRIBE dangling byte", b"\xa2\x06\x00\x01\x00\x01a\x00"),
            # [3.3.2] topic and packet identifier must fit in the remaining length
            ("PUBLISH rl 1", b"\x30\x01\x00"),
            ("PUBLISH topic past the end", b"\x30\x03\x00\x05a"),
            ("PUBLISH QoS 1 without packet id", b"\x32\x05" + AB),
            ("PUBLISH QoS 1 half a packet id", b"\x32\x06" + AB + b"\x00"),
            ("SUBSCRIBE rl 1", b"\x82\x01\x00"),
            ("SUBACK rl 1", b"\x90\x01\x00"),
        ]
    )


def test_remaining_length_over_four_bytes():
    # [2.2.3] the remaining length field is at most four bytes
    check_cases(
        [
            ("5-byte remaining length", b"\x30\xff\xff\xff\xff\x01"),
            ("5-byte remaining length of zeros", b"\x30\x80\x80\x80\x80\x00"),
        ]
    )
    # known as soon as the fourth length byte carries a continuation bit
    d = codec.Decoder()
    d.receive_data(b"\x82\x80\x80\x80\x80")
    raises(codec.MQTTError, d.next_packet)


# ------------------------------------------------------------------ maximum packet size


def test_max_packet_checked_from_fixed_header_before_body():
    d = codec.Decoder(max_packet=100)
    for byte in (b"\x30", b"\xff"):
        d.receive_data(byte)
        assert d.next_packet() is None
    d.receive_data(b"\x7f")  # remaining length 16383: no body byte sent yet
    e = raises(codec.MQTTError, d.next_packet)
    assert e.reason and e.code is None


def test_max_packet_boundary_counts_the_whole_packet():
    wire = b"\x30\x08" + AB + b"xyz"  # 10 bytes in all
    d = codec.Decoder(max_packet=10)
    d.receive_data(wire)
    p = d.next_packet()
    assert p.topic == "a/b" and bytes(p.payload) == b"xyz"
    d = codec.Decoder(max_packet=9)
    d.receive_data(wire[:2])  # the fixed header alone is enough to refuse
    raises(codec.MQTTError, d.next_packet)


def test_max_packet_applies_to_connect_too():
    d = codec.Decoder(max_packet=16)
    d.receive_data(connect()[:2])
    e = raises(codec.MQTTError, d.next_packet)
    assert e.code is None


# ------------------------------------------------------------------ nothing lost


def test_packets_before_a_malformed_one_are_delivered():
    d = codec.Decoder()
    d.receive_data(b"\x40\x02\x00\x07" + b"\x36\x07" + AB + b"\x00\x01")
    p = d.next_packet()
    assert p.type == support.PUBACK and p.pid == 7
    raises(codec.MQTTError, d.next_packet)


# ------------------------------------------------------------------ encoder refuses bad packets


def test_encoder_refuses_what_the_decoder_would_reject():
    buf = bytearray(64)
    raises(ValueError, codec.encode_publish, buf, "a/b", b"", 3, False, False, 1)  # [3.3.1.2]
    raises(ValueError, codec.encode_publish, buf, "a/b", b"", 1, False, False, 0)  # [2.3.1]
    raises(ValueError, codec.encode_publish, buf, "a/b", b"", 1, False, False, 65536)
    raises(ValueError, codec.encode_ack, buf, support.PUBACK, 0)  # [2.3.1]
    raises(ValueError, codec.encode, codec.Subscribe(0, [("a", 0)]))  # [MQTT-2.3.1-1]
    raises(ValueError, codec.encode, codec.Connect("c", password=b"pw"))  # [MQTT-3.1.2-22]


def test_encoder_refuses_strings_over_65535_bytes():
    if MICROPYTHON:
        skip("a 64 KB string does not fit the 128K test heap in one piece")
    # [1.5.3] string length is a 16-bit field
    raises(ValueError, codec.encode, codec.Publish("t" * 65536, b""))
    raises(ValueError, codec.encode, codec.Subscribe(1, [("t" * 65536, 0)]))
    assert len(codec.encode(codec.Publish("t" * 65535, b""))) == 1 + 3 + 2 + 65535

# Broker authentication and authorisation.
# Password file: one "user:$pbkdf2-sha256$ITERATIONS$SALT$HASH" per line (SALT and HASH in
# base64), written by `midge passwd`. ACL file: Mosquitto acl_file syntax ("user NAME",
# "topic [read|write|readwrite|deny] FILTER", "pattern ... FILTER" with %c and %u).
import binascii
import hashlib
import os

from midge import topics

SCHEME = "$pbkdf2-sha256$"
ITERATIONS = 10000
_READ = 1
_WRITE = 2
_DENY = 4
_ACCESS = {"read": _READ, "write": _WRITE, "readwrite": _READ | _WRITE, "deny": _DENY}


class AuthError(Exception):
    pass


def _hmac_sha256(ikey, okey, msg):
    h = hashlib.sha256(ikey)
    h.update(msg)
    o = hashlib.sha256(okey)
    o.update(h.digest())
    return o.digest()


def pbkdf2_sha256(password, salt, iterations):
    """PBKDF2-HMAC-SHA256 with a 32-byte result (RFC 8018), HMAC written out (no hmac module)."""
    fast = getattr(hashlib, "pbkdf2_hmac", None)
    if fast is not None:
        return fast("sha256", password, salt, iterations)
    key = password if len(password) <= 64 else hashlib.sha256(password).digest()
    key = key + bytes(64 - len(key))
    ikey = bytes(b ^ 0x36 for b in key)
    okey = bytes(b ^ 0x5C for b in key)
    u = _hmac_sha256(ikey, okey, salt + b"\x00\x00\x00\x01")
    acc = int.from_bytes(u, "big")
    for _ in range(iterations - 1):
        u = _hmac_sha256(ikey, okey, u)
        acc ^= int.from_bytes(u, "big")
    return acc.to_bytes(32, "big")


def _b64(b):
    return binascii.b2a_base64(b).decode().strip()


def hash_password(password, iterations=ITERATIONS, salt=None):
    """The password-file field for password (str or bytes)."""
    if isinstance(password, str):
        password = password.encode()
    if salt is None:
        salt = os.urandom(16)
    dk = pbkdf2_sha256(password, salt, iterations)
    return "%s%d$%s$%s" % (SCHEME, iterations, _b64(salt), _b64(dk))


def verify_password(password, field):
    if isinstance(password, str):
        password = password.encode()
    if not field.startswith(SCHEME):
        return False
    try:
        it, salt, dk = field[len(SCHEME) :].split("$")
        it = int(it)
        salt = binascii.a2b_base64(salt)
        dk = binascii.a2b_base64(dk)
    except ValueError:
        return False
    return _same(pbkdf2_sha256(password, salt, it), dk)


def _same(a, b):
    """a == b for bytes, in a time that does not depend on where they differ."""
    diff = len(a) ^ len(b)
    for x, y in zip(a, b):
        diff |= x ^ y
    return diff == 0


def _lines(path, what):
    """(line number, stripped line) of a text file, blank lines and comments skipped."""
    try:
        f = open(path)
    except OSError as e:
        raise AuthError("%s: cannot read %s (%s)" % (path, what, e))
    with f:
        n = 0
        for line in f:
            n += 1
            line = line.strip()
            if line and line[0] != "#":
                yield n, line


def read_passwords(path):
    """{user: field} from a password file; AuthError naming file:line when malformed."""
    users = {}
    for n, line in _lines(path, "password file"):
        user, sep, field = line.partition(":")
        if not sep or not user or not field.startswith(SCHEME):
            raise AuthError("%s:%d: expected user:%s... (made by midge passwd)" % (path, n, SCHEME))
        users[user] = field
    return users


def _covers(acl, filt):
    """True when every topic matched by filter filt is matched by ACL filter acl."""
    if filt[:1] == "$" and acl[:1] in ("+", "#"):
        return False
    a = acl.split("/")
    f = filt.split("/")
    for i, lv in enumerate(a):
        if lv == "#":
            return True
        if i >= len(f):
            return False
        if lv == "+":
            if f[i] == "#":
                return False
        elif lv != f[i]:
            return False
    return len(a) == len(f)


def read_acl(path):
    """[(user or None for anonymous, is_pattern, access, filter)] from an ACL file."""
    rules = []
    user = None
    for n, line in _lines(path, "ACL file"):
        words = line.split(None, 1)
        kw = words[0]
        rest = words[1].strip() if len(words) > 1 else ""
        if kw == "user":
            if not rest:
                raise AuthError("%s:%d: user needs a name" % (path, n))
            user = rest
            continue
        if kw not in ("topic", "pattern"):
            raise AuthError("%s:%d: unknown keyword %r (user, topic, pattern)" % (path, n, kw))
        acc = _READ | _WRITE
        w = rest.split(None, 1)
        if w and w[0] in _ACCESS:
            acc = _ACCESS[w[0]]
            rest = w[1].strip() if len(w) > 1 else ""
        if not rest:
            raise AuthError("%s:%d: %s needs a topic filter" % (path, n, kw))
        try:
            topics.check_filter(rest.replace("%c", "c").replace("%u", "u"))
        except topics.MQTTError as e:
            raise AuthError("%s:%d: %s" % (path, n, e.reason))
        rules.append((user if kw == "topic" else None, kw == "pattern", acc, rest))
    return rules


def _unsafe(name):
    """A name that cannot stand for one topic level in a pattern: its rule does not apply
    (client id "+" must not turn devices/%c/# into devices/+/#)."""
    return not name or "+" in name or "#" in name or "/" in name


class Auth:
    """What the broker core asks: has_passwords(), check(user, pw), allowed(user, cid, t, write)."""

    def __init__(self, password_file=None, acl_file=None):
        self.users = read_passwords(password_file) if password_file else None
        self.rules = read_acl(acl_file) if acl_file else None
        self._ok = {}  # user -> sha256(salt+password) of the last verified password

    def has_passwords(self):
        return self.users is not None

    def check(self, user, password):
        field = self.users.get(user) if self.users else None
        if field is None or password is None:
            return False
        quick = hashlib.sha256(field.encode() + password).digest()
        ok = self._ok.get(user)
        if ok is not None and _same(ok, quick):
            return True
        if verify_password(password, field):
            self._ok[user] = quick
            return True
        return False

    def allowed(self, user, cid, t, write):
        """May this client write (publish to topic t) or read (subscribe to filter t)?"""
        if self.rules is None:
            return True
        need = _WRITE if write else _READ
        grant = False
        for ruser, pattern, acc, f in self.rules:
            if pattern:
                if "%u" in f:
                    if _unsafe(user):
                        continue
                    f = f.replace("%u", user)
                if "%c" in f:
                    if _unsafe(cid):
                        continue
                    f = f.replace("%c", cid)
            elif ruser != user:
                continue
            if topics.matches(f, t) if write else _covers(f, t):
                if acc & _DENY:
                    return False
                if acc & need:
                    grant = True
        return grant

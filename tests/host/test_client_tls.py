"""TLS against a Mosquitto TLS listener, with a throwaway CA and server certificate made at
test time by openssl in a temporary folder (no key is ever committed): the blocking and the
asyncio client on CPython and on MicroPython (the unix port's `ssl`, mbedTLS) verify the
broker against the CA file, pass a QoS 1 message, and refuse a broker signed by another CA
or, without a CA file, one the system store does not know (MicroPython: no TLS without a CA
file unless verification is turned off by name)."""

import os
import subprocess
import sys

import harness
import pytest

OPENSSL = "/usr/bin/openssl"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "tls_client_run.py")
MP = os.path.join(ROOT, ".venv", "bin", "micropython")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    if not os.path.exists(OPENSSL):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")

    def sh(*args):
        subprocess.run([OPENSSL, *args], check=True, capture_output=True, cwd=d)

    sh(*"req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=midge-test-ca".split(),
       "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    sh(*"req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other".split(),
       "-keyout", "o.key", "-out", "o.crt")  # fmt: skip
    sh(*"req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout srv.key -out srv.csr".split())
    (d / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    sh(*"x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1".split(),
       "-extfile", "ext", "-out", "srv.crt")  # fmt: skip
    port = harness.free_port()
    m = harness.Mosquitto(
        extra="listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s"
        % (port, d / "ca.crt", d / "srv.crt", d / "srv.key")
    ).start()
    try:
        harness.wait_port(port)
        yield port, str(d / "ca.crt"), str(d / "o.crt")
    finally:
        m.stop()


def run_script(cmd, env, port, ca, other):
    out = subprocess.run(
        cmd + [SCRIPT, str(port), ca, other],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(line.split(": ", 1) for line in out.stdout.splitlines())


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_tls_verifies_the_broker(tls_broker, runtime):
    port, ca, other = tls_broker
    if runtime == "cpython":
        cmd = [sys.executable]
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
        why = "CERTIFICATE_VERIFY_FAILED"
    else:
        cmd = [MP, "-X", "heapsize=256K"]
        env = dict(os.environ, MICROPYPATH=os.path.join(ROOT, "lib") + ":.frozen")
        why = "not correctly signed by the trusted CA"
    r = run_script(cmd, env, port, ca, other)
    assert r["blocking ok"] == "got [b'secret']", r
    assert r["asyncio ok"] == "got [b'secret']", r
    # without a CA file: verified against the system store (which lacks the test CA), or
    # refused on MicroPython, which has none; cert_reqs CERT_NONE is the only way round
    no_ca = "TLS needs ssl_params['cafile']" if runtime == "micropython" else why
    for d in ("blocking", "asyncio"):
        for k, w in (("other", why), ("no cafile", no_ca)):
            v = r["%s %s" % (d, k)]
            assert v.startswith("refused: ") and w in v and "\n" not in v, r
        assert r[d + " insecure"] == "got [b'secret']", r

# TLS for the client drivers, imported only when a connection asks for it.
import ssl as _ssl
from binascii import a2b_base64


def args(c):
    """(SSLContext, server_hostname) for client c's `ssl`, `ssl_params` and `server`."""
    p = c.ssl_params or {}
    return context(c.ssl, p), p.get("server_hostname", c.server)


def wrap(sock, c):
    """sock wrapped in TLS for client c (the handshake happens here)."""
    ctx, host = args(c)
    return ctx.wrap_socket(sock, server_hostname=host)


def context(ssl, params):
    """The SSLContext for the `ssl`/`ssl_params` arguments: an SSLContext is used as given;
    True builds a client context verifying the server against params["cafile"], or the
    system store where the runtime has one. MicroPython has none: there, no CA file is a
    ValueError unless params["cert_reqs"] is ssl.CERT_NONE, the explicit opt-out (no
    verification: anyone on the path can pose as the broker)."""
    if hasattr(ssl, "wrap_socket"):
        return ssl
    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    if params.get("cert_reqs") == _ssl.CERT_NONE:
        # CPython needs this before CERT_NONE; to MicroPython it is a plain attribute
        ctx.check_hostname = False  # type: ignore[attr-defined]
        ctx.verify_mode = _ssl.CERT_NONE
        return ctx
    cafile = params.get("cafile") or params.get("ca_certs")
    if not cafile:
        if not hasattr(ctx, "load_default_certs"):
            raise ValueError(
                "TLS needs ssl_params['cafile']: this runtime has no system CA store "
                "(ssl_params={'cert_reqs': ssl.CERT_NONE} turns verification off)"
            )
        ctx.load_default_certs()
        return ctx
    with open(cafile, "rb") as f:
        data = f.read()
    # PEM is turned into DER here: MicroPython's mbedTLS takes DER only (one per call).
    for pem in data.split(b"-----BEGIN CERTIFICATE-----")[1:]:
        ctx.load_verify_locations(cadata=a2b_base64(pem.split(b"-----END")[0]))
    if b"-----BEGIN" not in data:
        ctx.load_verify_locations(cadata=data)
    ctx.verify_mode = _ssl.CERT_REQUIRED
    return ctx

# A drop-in for umqtt.simple: a sketch moves to midge by changing one import,
#   from midge.umqtt import MQTTClient
# and gets one write per packet, keepalive pings from wait_msg()/check_msg(), QoS 2, and
# errors that say what happened (MQTTException is an OSError, as umqtt's socket errors are).
from midge.client import Client, MQTTException

__all__ = ("MQTTClient", "MQTTException")


class MQTTClient:
    def __init__(
        self,
        client_id,
        server,
        port=0,
        user=None,
        password=None,
        keepalive=0,
        ssl=None,
        ssl_params={},  # noqa: B006  (umqtt's signature; never mutated)
    ):
        if isinstance(client_id, bytes):
            client_id = str(client_id, "utf-8")
        self.client_id = client_id
        self.server = server
        self.port = port
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.ssl_params = ssl_params
        self.cb = None
        self._will = None
        self._c = None

    @property
    def sock(self):
        return self._c.sock if self._c else None

    def set_callback(self, f):
        """f(topic, msg), both bytes, as in umqtt."""
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self._will = (topic, msg, qos, retain)

    def connect(self, clean_session=True, timeout=None):
        c = self._c = Client(
            self.client_id,
            self.server,
            self.port,
            self.user,
            self.pswd,
            self.keepalive,
            clean_session,
            self.ssl,
            self.ssl_params,
            reconnect=False,
        )
        if self._will:
            c.set_will(*self._will)
        c.set_callback(self._deliver)
        return c.connect(int(timeout * 1000) if timeout else 5000)

    def _deliver(self, topic, payload, msg):
        if self.cb is not None:
            self.cb(topic.encode(), payload)

    def disconnect(self):
        self._c.disconnect()

    def ping(self):
        self._c.ping()

    def publish(self, topic, msg, retain=False, qos=0):
        """QoS 1 and 2 return once acknowledged, as in umqtt."""
        self._c.publish(topic, msg, qos, retain, True)

    def subscribe(self, topic, qos=0):
        if isinstance(topic, bytes):
            topic = str(topic, "utf-8")
        self._c.subscribe(topic, qos)

    def wait_msg(self):
        """Block until something arrives (or a keepalive ping is due) and handle it."""
        self._c.loop(-1)

    def check_msg(self):
        """Handle whatever has arrived, without blocking."""
        self._c.loop(0)

# A drop-in for umqtt.simple: a sketch moves to midge by changing one import,
#   from midge.umqtt import MQTTClient
# and gets one write per packet, keepalive pings from wait_msg()/check_msg(), QoS 2, and
# errors that say what happened (MQTTException is an OSError, as umqtt's socket errors are).
from midge.client import Client
from midge.client import MQTTException as MQTTException


class MQTTClient(Client):
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
        Client.__init__(
            self, client_id, server, port, user, password, keepalive, True, ssl, ssl_params, False
        )

    def set_callback(self, f):
        """f(topic, msg), both bytes, as in umqtt."""
        self.callback = lambda t, p, m: f(t.encode(), p)

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.set_will(topic, msg, qos, retain)

    def connect(self, clean_session=True, timeout=None):
        self.clean_session = clean_session
        return Client.connect(self, int(timeout * 1000) if timeout else 5000)

    def publish(self, topic, msg, retain=False, qos=0):
        """Written at once; QoS 1 and 2 return once acknowledged, as in umqtt."""
        Client.publish(self, topic, msg, qos, retain, True)

    def ping(self):
        Client.ping(self)
        self._out(True)  # written now; the PINGRESP is left for wait_msg()

    def subscribe(self, topic, qos=0):
        Client.subscribe(self, topic, qos)

    def wait_msg(self):
        """Block until something arrives (or a keepalive ping is due) and handle it."""
        self.loop(-1)

    def check_msg(self):
        """Handle whatever has arrived, without blocking."""
        self.loop(0)

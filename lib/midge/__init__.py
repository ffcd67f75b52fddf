# midge: a tiny MQTT 3.1.1 client and broker for MicroPython boards and CPython.
__version__ = "0.1.0"

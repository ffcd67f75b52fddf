"""A yardstick for the broker bench, not a broker: the least a CPython asyncio server can do
for the QoS 1 round-trip scenario. It answers CONNECT, SUBSCRIBE and PINGREQ, and for each
PUBLISH writes a PUBACK back and passes the packet as it came to every subscriber: no topic
matching, no sessions, no checks. What midge's broker loses against it is what its own MQTT
work costs; what it loses against Mosquitto is what any Python asyncio server loses.

    python -m host_tools.bench_floor PORT
"""

import asyncio
import gc
import sys

_subs = []
_buf = memoryview(bytearray(1 << 16))


class _Peer(asyncio.BufferedProtocol):
    def connection_made(self, tr):
        self.tr = tr

    def get_buffer(self, sizehint):
        return _buf

    def buffer_updated(self, n):
        data = bytes(_buf[:n])
        i = 0
        while i + 1 < n:  # the scenario's packets are all under 128 bytes: 1-byte length
            end = i + 2 + data[i + 1]
            t = data[i] >> 4
            if t == 3:  # PUBLISH (QoS 1): PUBACK its identifier, then pass it on
                k = i + 4 + (data[i + 2] << 8 | data[i + 3])
                self.tr.write(b"\x40\x02" + data[k : k + 2])
                for s in _subs:
                    s.write(data[i:end])
            elif t == 1:
                self.tr.write(b"\x20\x02\x00\x00")
            elif t == 8:  # SUBSCRIBE: grant QoS 1
                _subs.append(self.tr)
                self.tr.write(b"\x90\x03" + data[i + 2 : i + 4] + b"\x01")
            elif t == 12:
                self.tr.write(b"\xd0\x00")
            i = end

    def connection_lost(self, exc):
        if self.tr in _subs:
            _subs.remove(self.tr)


async def _serve(port):
    await asyncio.get_running_loop().create_server(_Peer, "127.0.0.1", port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    gc.freeze()
    try:
        asyncio.run(_serve(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass

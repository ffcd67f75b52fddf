import os
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (os.path.join(ROOT, "lib"), HERE, os.path.join(HERE, "host"), ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)

import harness  # noqa: E402


def pytest_collection_modifyitems(config, items):
    for item in items:
        if os.sep + "host" + os.sep in str(item.fspath):
            item.add_marker(pytest.mark.cpython_only)


@pytest.fixture(scope="session", autouse=True)
def _mosquitto_brokers():
    tmp = tempfile.mkdtemp(prefix="midge-tests-")
    os.environ["MIDGE_TEST_TMP"] = tmp
    brokers = harness.start_brokers()
    yield brokers
    for b in brokers:
        b.stop()

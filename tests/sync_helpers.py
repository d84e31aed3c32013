"""Shared by the sync tests: a private etcd per module (started on free loopback ports in a
temporary directory, stopped by PID, also on failure), an agent thread, a waiting helper.

etcd missing is a failure, not a skip: the sync layer is tested against the real server."""

import itertools
import threading
import time

import pytest

from fwsg.errors import EnvironmentProblem
from fwsg.sync.server import EtcdServer

_seq = itertools.count()


def start_etcd():
    server = EtcdServer()
    try:
        return server.start()
    except EnvironmentProblem as e:
        server.close()
        pytest.fail(f"etcd is needed for the sync tests (scripts/setup installs etcd-server): {e}")


@pytest.fixture(scope="module")
def etcd_server():
    server = start_etcd()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def prefix():
    """A key prefix of its own for each test (tests share a module's server)."""
    return f"/t{next(_seq)}"


def wait_for(cond, timeout=10.0, what="condition"):
    """Poll ``cond()`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class AgentThread:
    """An agent run in a thread of the test process (stopped in ``close``)."""

    def __init__(self, agent):
        self.agent = agent
        self.thread = threading.Thread(target=agent.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.agent

    def __exit__(self, *exc):
        self.agent.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "agent did not stop"


def while_unreachable(server, edit):
    """Stop ``server``, run ``edit(store)`` against the same data on another port (agents,
    which know only the usual port, cannot see it happen), then serve the usual port again."""
    from fwsg.sync.server import free_port
    from fwsg.sync.store import EtcdStore

    port = server.client_port
    server.stop()
    server.client_port = free_port()
    try:
        server.start()
        edit(EtcdStore([server.endpoint]))
    finally:
        server.stop()
        server.client_port = port
        server.start()

"""A private etcd server on loopback, for tests, the cluster demo and the sync benchmark.

``EtcdServer()`` picks two free loopback ports and a temporary data directory; ``start()`` runs
Debian's ``etcd`` binary as a child process and waits until it answers; ``stop()`` ends that
process by its PID (SIGTERM, then SIGKILL) and keeps the data, so ``start()`` again resumes the
same store (an outage); ``close()`` stops it and removes the data directory. Nothing here
touches a process it did not start.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from fwsg.errors import EnvironmentProblem

ETCD = "etcd"


def _die_with_parent():
    """In the child: get SIGTERM when the process that started it dies (no stray etcd)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port(host="127.0.0.1"):
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def etcd_binary():
    """Path of the etcd server binary; EnvironmentProblem when it is not installed."""
    path = shutil.which(ETCD) or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if path is None:
        raise EnvironmentProblem("etcd is not installed (Debian package etcd-server; "
                                 "scripts/setup installs it)")
    return path


class EtcdServer:
    """One single-member etcd on 127.0.0.1 with its own data directory."""

    def __init__(self, name="fwsg", data_dir=None, client_port=None, peer_port=None, tls=None,
                 tmp_parent=None):
        """``tls``: {"cert", "key", "ca"} files: clients use https and must present a
        certificate signed by ``ca``. ``tmp_parent``: where the temporary data directory is
        made (e.g. ``/dev/shm`` for a benchmark that must not be bound by the disk's fsync)."""
        self.name = name
        self.tls = tls
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="fwsg-etcd-", dir=tmp_parent)
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.proc = None
        self._log = None

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self):
        """The fwsg source URL of this server (no prefix)."""
        return f"{'etcds' if self.tls else 'etcd'}://{self.endpoint}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=20.0):
        """Run the server (again, on the same ports and data) and wait until it answers."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        client = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self._log = open(os.path.join(self.data_dir, "etcd.log"), "ab")
        tls = []
        ctx = None
        if self.tls:
            import ssl

            tls = ["--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                   "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"]
            ctx = ssl.create_default_context(cafile=self.tls["ca"])
            ctx.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
        self.proc = subprocess.Popen(
            [etcd_binary(), "--name", self.name, "--data-dir", os.path.join(self.data_dir, "d"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"{self.name}={peer}", "--initial-cluster-state", "new",
             "--log-level", "error", "--logger", "zap"] + tls,
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise EnvironmentProblem(f"etcd exited with status {self.proc.returncode} "
                                         f"(log: {self._log.name})")
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=1, context=ctx) as r:
                    if b"true" in r.read():
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise EnvironmentProblem(f"etcd did not answer within {timeout:g} s")
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """End the server process (by PID) and wait for it; the data stays."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self):
        """Stop the server and remove its data directory (if this object made it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

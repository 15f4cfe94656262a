"""A real membershipd for the end-to-end tests: ``membershipd serve`` on the embedded default
(SQLite and its own nats-server) in a temporary directory; and the lying control plane of the
trust tests, ``unibus-liar``. membershipd binds port 0 (the OS picks free loopback ports, so
parallel servers never race for one) and reports where it serves in ``<data>/serving.json``.

The tests use the installed ``unibus`` package: scripts/test.sh builds the wheel and installs it
into a fresh virtual environment that runs them (subprocesses use the same interpreter).

The binaries come from ``$UNIBUS_MEMBERSHIPD``, ``$UNIBUS_LIAR`` and ``$NATS_SERVER``, or from
the repository's ``target/debug/membershipd``, ``target/debug/unibus-liar`` and
``.tools/bin/nats-server`` (``scripts/test.sh`` builds and installs them).
"""

import json
import os
import pathlib
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]

try:
    import unibus._native  # noqa: F401  (the generated module and the library, from the wheel)
except ImportError as e:
    raise RuntimeError(
        "the unibus package is not installed in this Python: run scripts/test.sh, or install the "
        "wheel that bindings/python/build-wheel.sh builds"
    ) from e


def _binary(variable: str, default: pathlib.Path) -> str:
    path = pathlib.Path(os.environ.get(variable) or default)
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run scripts/test.sh, or set ${variable}")
    return str(path)


class Membershipd:
    """A running ``membershipd serve`` and its admin CLI."""

    def __init__(self, data: pathlib.Path) -> None:
        self.data = data
        self.binary = _binary("UNIBUS_MEMBERSHIPD", REPO / "target/debug/membershipd")
        self.nats_server = _binary("NATS_SERVER", REPO / ".tools/bin/nats-server")
        self.log = open(data / "membershipd.log", "ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--data-dir", str(self.data),
                "--nats-server", self.nats_server,
                "--listen", "127.0.0.1:0",
                "--nats-listen", "127.0.0.1:0",
                "serve",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.public_url: str = self._wait_serving()["public_url"]

    def _wait_serving(self) -> dict:
        """What this process wrote to serving.json (an earlier one's names another pid)."""
        deadline = time.monotonic() + 60
        report = self.data / "serving.json"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"membershipd exited: see {self.data / 'membershipd.log'}")
            try:
                serving = json.loads(report.read_text())
                if serving["pid"] == self.process.pid:
                    return serving
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        raise RuntimeError("membershipd did not serve within 60 s")

    def cli(self, *args: str):
        """Runs an admin command on the same data directory and returns its JSON output."""
        command = [self.binary, "--data-dir", str(self.data), "--public-url", self.public_url]
        done = subprocess.run([*command, "--json", *args], capture_output=True, check=True)
        return json.loads(done.stdout)

    def invite(self) -> str:
        return self.cli("invite", "create")["link"]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.log.close()


class Liar:
    """``unibus-liar``: records real replies of membershipd as ``identity``, then answers that
    identity's control-plane requests on a nats-server of its own, replaying epoch ``rollback``
    of a room as its latest and naming an impostor as the owner of ``swap_owner``."""

    def __init__(self, identity, nats_urls, log_dir: pathlib.Path, rollback=None, swap_owner=None):
        command = [_binary("UNIBUS_LIAR", REPO / "target/debug/unibus-liar")]
        for url in nats_urls:
            command += ["--cluster", url]
        if rollback:
            command += ["--rollback", f"{rollback[0]}:{rollback[1]}"]
        if swap_owner:
            command += ["--swap-owner", swap_owner]
        env = dict(os.environ, NATS_SERVER=_binary("NATS_SERVER", REPO / ".tools/bin/nats-server"))
        self.log_path = log_dir / "liar.log"
        self.log = open(self.log_path, "ab")
        # It runs until its stdin closes, so it never outlives this process.
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env
        )
        self.process.stdin.write(bytes(identity.export_secret_bytes()).hex().encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"unibus-liar did not start: see {self.log_path}")
        started = json.loads(line)
        self.nats_url: str = started["nats_url"]
        self.impostor: str = started["impostor"]

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def membershipd(tmp_path):
    server = Membershipd(tmp_path)
    yield server
    server.stop()

"""Fixtures for the invite page tests: real ``membershipd serve`` processes (each with its
embedded nats-server, on free loopback ports) and one headless Chromium.

- ``app_server``: HTTPS (a self-signed certificate made here) with every app setting, as an
  operator with an iOS and an Android app would run it;
- ``plain_server``: plain http on loopback with no app settings, as in development.

The binaries come from ``$UNIBUS_MEMBERSHIPD`` and ``$NATS_SERVER`` (scripts/test.sh sets
both), or the repository's ``target/debug/membershipd`` and ``.tools/bin/nats-server``.
Screenshots go to ``$UNIBUS_INVITE_PAGE_OUT`` (scripts/test.sh: ``<target dir>/invite-page``),
or ``target/invite-page``.
"""

import datetime
import ipaddress
import json
import os
import pathlib
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from browser import Browser

REPO = pathlib.Path(__file__).resolve().parents[3]

IOS_APP_ID = "ABCDE12345.com.example.chat"
ANDROID_PACKAGE = "com.example.chat"
FINGERPRINTS = [
    "14:6D:E9:83:C5:73:06:50:D8:EE:B9:95:2F:34:FC:64:16:A0:83:42:E6:1D:BE:A8:8A:04:96:B2:3F:CF:44:E5",
    "0F:1E:2D:3C:4B:5A:69:78:87:96:A5:B4:C3:D2:E1:F0:0F:1E:2D:3C:4B:5A:69:78:87:96:A5:B4:C3:D2:E1:F0",
]
IOS_STORE_URL = "https://apps.apple.com/app/id1234567890"
ANDROID_STORE_URL = "https://play.google.com/store/apps/details?id=com.example.chat"
APP_NAME = "Example Chat"


def _binary(variable: str, default: pathlib.Path) -> str:
    path = pathlib.Path(os.environ.get(variable) or default)
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run scripts/test.sh, or set ${variable}")
    return str(path)


MEMBERSHIPD = _binary("UNIBUS_MEMBERSHIPD", REPO / "target/debug/membershipd")
NATS_SERVER = _binary("NATS_SERVER", REPO / ".tools/bin/nats-server")


class Membershipd:
    """A running ``membershipd serve`` on ``data``, logging at debug level to ``log``."""

    def __init__(self, data: pathlib.Path, *flags: str) -> None:
        self.data = data
        self.log_path = data / "membershipd.log"
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [MEMBERSHIPD, "--data-dir", str(data), "--nats-server", NATS_SERVER,
             "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", *flags, "serve"],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=dict(os.environ, MEMBERSHIPD_LOG="debug"),
        )
        serving = self._wait_serving()
        self.public_url: str = serving["public_url"]
        self.port: int = int(serving["http"].rsplit(":", 1)[1])

    def _wait_serving(self) -> dict:
        deadline = time.monotonic() + 60
        report = self.data / "serving.json"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"membershipd exited: see {self.log_path}")
            try:
                serving = json.loads(report.read_text())
                if serving["pid"] == self.process.pid:
                    return serving
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        raise RuntimeError("membershipd did not serve within 60 s")

    def cli(self, *args: str):
        command = [MEMBERSHIPD, "--data-dir", str(self.data), "--public-url", self.public_url]
        done = subprocess.run([*command, "--json", *args], capture_output=True, check=True)
        return json.loads(done.stdout)

    def invite(self) -> str:
        """A new invite's link."""
        return self.cli("invite", "create", "--no-qr")["link"]

    def invite_statuses(self) -> list:
        return [invite["status"] for invite in self.cli("invite", "list")]

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.log.close()


def _self_signed(directory: pathlib.Path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("app-server")
    cert, key = _self_signed(data)
    flags = [
        "--tls-cert", str(cert), "--tls-key", str(key),
        "--app-name", APP_NAME,
        "--ios-app-id", IOS_APP_ID,
        "--android-package", ANDROID_PACKAGE,
        "--ios-store-url", IOS_STORE_URL,
        "--android-store-url", ANDROID_STORE_URL,
    ]
    for fingerprint in FINGERPRINTS:
        # Given in lower case: membershipd writes them in upper case, as Android does.
        flags += ["--android-cert-fingerprint", fingerprint.lower()]
    server = Membershipd(data, *flags)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def plain_server(tmp_path_factory):
    server = Membershipd(tmp_path_factory.mktemp("plain-server"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def out_dir():
    path = pathlib.Path(os.environ.get("UNIBUS_INVITE_PAGE_OUT") or REPO / "target/invite-page")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser(out_dir):
    # The test certificate is self-signed, and *.test names lead to 127.0.0.1, for a link with
    # the longest host name there is.
    chromium = Browser(
        extra_args=["--ignore-certificate-errors", "--host-resolver-rules=MAP *.test 127.0.0.1"],
        log_path=out_dir / "chromium.log",
    )
    yield chromium
    chromium.close()

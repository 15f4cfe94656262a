"""The quickstarts in examples/ run their whole story against a real membershipd: the Python
one (with the installed unibus package, as an app runs it), and the Rust one (built by scripts/test.sh; ``$UNIBUS_RUST_QUICKSTART`` overrides where)."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]

EXPECTED = [
    "  epoch 1: member opened the owner's key: true",
    "  epoch 2: member opened the owner's key: true",
    "  epoch 3: member refused",
]


def run(command, env=None):
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for line in EXPECTED:
        assert line.lower() in (l.lower() for l in lines), done.stdout
    return lines


def test_the_python_quickstart_runs_its_whole_story(membershipd):
    script = REPO / "examples/python/quickstart.py"
    run([sys.executable, str(script), membershipd.invite(), membershipd.invite()])


def test_the_rust_quickstart_runs_its_whole_story(membershipd):
    binary = os.environ.get("UNIBUS_RUST_QUICKSTART") or REPO / "target/debug/examples/quickstart"
    assert pathlib.Path(binary).is_file(), f"{binary} is missing: run scripts/test.sh"
    run([str(binary), membershipd.invite(), membershipd.invite()])

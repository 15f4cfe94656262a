"""Strips the native libraries in a wheel in place and rewrites their RECORD entries.

    python3 strip_wheel.py WHEEL

Each ``*.so`` loses its debug info and every symbol except uniffi's ``UNIFFI_META_*`` ones
(GNU strip), as scripts/build-ffi-release.sh does for the jar. maturin's own ``strip`` cannot be
used: it strips at link time, before uniffi-bindgen reads the API from the symbol table.
"""

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile


def record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def strip(data: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "lib.so")
        with open(path, "wb") as f:
            f.write(data)
        subprocess.run(
            ["strip", "--strip-all", "--wildcard", "--keep-symbol=UNIFFI_META_*", path],
            check=True,
        )
        with open(path, "rb") as f:
            return f.read()


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]

    replaced = {}
    for i, (info, data) in enumerate(entries):
        if info.filename.endswith(".so"):
            stripped = strip(data)
            entries[i] = (info, stripped)
            replaced[info.filename] = stripped
            print(f"stripped {info.filename}: {len(data):,} -> {len(stripped):,} bytes")
    if not replaced:
        raise SystemExit(f"no native library in {wheel}")

    for i, (info, data) in enumerate(entries):
        if info.filename.endswith(".dist-info/RECORD"):
            lines = []
            for line in data.decode().splitlines():
                name = line.rsplit(",", 2)[0]
                if name in replaced:
                    new = replaced[name]
                    line = f"{name},{record_hash(new)},{len(new)}"
                lines.append(line)
            entries[i] = (info, ("\n".join(lines) + "\n").encode())

    partial = wheel + ".part"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as target:
        for info, data in entries:
            target.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    os.replace(partial, wheel)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: strip_wheel.py WHEEL")
    main(sys.argv[1])

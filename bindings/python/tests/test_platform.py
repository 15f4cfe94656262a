"""init_platform: the SDK's runtime and logging, once per process (so each case runs in a
fresh interpreter)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, socket, unibus

    class Sink(unibus.LogSink):
        def __init__(self):
            self.lines = []
        def log(self, level, target, message):
            self.lines.append((level, target, message))

    sink = Sink()
    unibus.init_platform(unibus.PlatformConfig(worker_threads=1, log_level=unibus.LogLevel.DEBUG), sink)
    try:
        unibus.init_platform(unibus.PlatformConfig(worker_threads=1, log_level=unibus.LogLevel.OFF))
        raise SystemExit("a second init_platform was accepted")
    except unibus.PlatformError.AlreadyInitialized:
        pass

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "cd" * 32
    link = unibus.InviteLink.parse(f"http://127.0.0.1:{port}/invite#{token}")
    options = unibus.RegisterOptions(attempts=2, initial_backoff_ms=10)
    try:
        asyncio.run(unibus.register(link, unibus.Identity.generate(), options))
        raise SystemExit("registering with nobody listening succeeded")
    except unibus.RegisterError.Transport:
        pass
    retries = [l for l in sink.lines if "retrying" in l[2]]
    assert retries, sink.lines
    assert retries[0][0] == unibus.LogLevel.DEBUG and retries[0][1].startswith("unibus"), retries
    assert not any(token in l[2] for l in sink.lines), "the invite token reached the log"

    unibus.shutdown_platform(1000)
    try:
        asyncio.run(unibus.register(link, unibus.Identity.generate(), options))
        raise SystemExit("a call after shutdown_platform ran")
    except unibus.RegisterError.Internal as e:
        assert "shut down" in str(e), e
    print("ok")
    """
)


def test_init_platform_routes_logs_to_the_apps_sink_once_and_shutdown_stops_the_sdk():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr

"""A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
file descriptors 3 and 4, messages of JSON ended by a NUL byte), so no port is opened and no
extra package is needed.

Every wait is bounded; nothing here sleeps to decide an outcome.
"""

import base64
import fcntl
import json
import os
import selectors
import shutil
import subprocess
import tempfile
import time

CHROMIUM = os.environ.get("UNIBUS_CHROMIUM", "/usr/bin/chromium")
TIMEOUT = 30.0


class BrowserError(RuntimeError):
    pass


class Browser:
    """One Chromium process with a fresh profile and one page target attached."""

    def __init__(self, extra_args=(), log_path=None):
        if not os.path.isfile(CHROMIUM):
            raise BrowserError(f"{CHROMIUM} is missing: run scripts/setup.sh (Debian's chromium)")
        self.profile = tempfile.mkdtemp(prefix="unibus-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        self._log = open(log_path or os.devnull, "ab")

        def pipe_to_3_and_4():
            # In the child: the browser reads commands on fd 3 and writes replies on fd 4.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        args = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            *extra_args,
            "about:blank",
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            pass_fds=(3, 4),
            preexec_fn=pipe_to_3_and_4,
        )
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call(
            "Target.attachToTarget", targetId=page["targetId"], flatten=True
        )["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable")

    # -- the protocol -------------------------------------------------------------------------

    def call(self, method, session=None, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def send(self, method, **params):
        """A command to the attached page."""
        return self.call(method, session=self.session, **params)

    def _read(self, deadline):
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("Chromium did not answer in time")
            with selectors.DefaultSelector() as selector:
                selector.register(self._from_browser, selectors.EVENT_READ)
                if not selector.select(remaining):
                    continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError("Chromium closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def wait_event(self, method, since=0):
        """The first event named ``method`` at or after index ``since`` of ``events``."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            for event in self.events[since:]:
                if event.get("method") == method:
                    return event
            self.events.append(self._read(deadline))

    # -- what the tests do --------------------------------------------------------------------

    def open(self, url, width=1280, height=900, dark=False, javascript=True):
        """Loads ``url`` in a viewport of ``width`` CSS pixels, light or dark, and returns the
        index in ``events`` where this load's events start."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=2 if width < 600 else 1,
            mobile=width < 600,
        )
        self.send(
            "Emulation.setEmulatedMedia",
            features=[{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}],
        )
        self.send("Emulation.setScriptExecutionDisabled", value=not javascript)
        self.send("Network.setCacheDisabled", cacheDisabled=True)
        # about:blank first, so that a change of fragment alone is a new load too.
        start = len(self.events)
        self.send("Page.navigate", url="about:blank")
        self.wait_event("Page.loadEventFired", start)
        start = len(self.events)
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", start)
        return start

    def eval(self, expression):
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path=None, selector=None):
        """A PNG of the whole page, or of the element ``selector``; written to ``path`` if
        given, and returned."""
        if selector:
            box = self.eval(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                ".getBoundingClientRect(); return [r.x + scrollX, r.y + scrollY, r.width, r.height]; })()"
            )
            clip = dict(zip(("x", "y", "width", "height"), box), scale=1)
        else:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.send(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )["data"]
        png = base64.b64decode(data)
        if path:
            with open(path, "wb") as out:
                out.write(png)
        return png

    def key(self, key, code, key_code):
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=key_code,
            )

    def close(self):
        try:
            self.call("Browser.close")
        except BrowserError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

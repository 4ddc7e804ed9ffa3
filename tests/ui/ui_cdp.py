"""A minimal headless-Chromium driver over the DevTools protocol, with no Python dependency.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol commands (JSON, each
ending in a NUL byte) on fd 3 and writes replies and events on fd 4. That is all a test needs to
open a page, type into a form, click, evaluate JavaScript and take a screenshot -- without
selenium/chromedriver or playwright (whose browser download is impossible here).

    with Chromium() as browser:
        page = browser.new_page()
        page.goto("http://127.0.0.1:8080/")
        page.wait_for("document.title.length > 0")
        page.screenshot("shot.png")
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        self.executable = executable or chromium_path()
        if not self.executable:
            raise BrowserError("chromium not found (apt-get install -y chromium)")
        self.timeout = timeout
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._cv = threading.Condition()
        self._buf = b""

    # -- process ----------------------------------------------------------------------

    def __enter__(self) -> "Chromium":
        self.profile = tempfile.mkdtemp(prefix="streamtrain-chromium-")
        cmd_r, cmd_w = os.pipe()     # we write commands, chromium reads fd 3
        out_r, out_w = os.pipe()     # chromium writes fd 4, we read
        # move the child's ends above 10 so dup2 onto 3/4 cannot clobber one with the other
        child_in = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
        os.close(cmd_r)
        os.close(out_w)

        def in_child():
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.stderr = open(os.path.join(self.profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
            pass_fds=(3, 4, child_in, child_out), preexec_fn=in_child, start_new_session=True)
        os.close(child_in)
        os.close(child_out)
        self._w, self._r = cmd_w, out_r
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_loop(self) -> None:
        while True:
            try:
                chunk = os.read(self._r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._replies[-1] = {"error": {"message": "chromium closed the pipe"}}
                    self._cv.notify_all()
                return
            self._buf += chunk
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cv:
                        self._replies[msg["id"]] = msg
                        self._cv.notify_all()

    # -- protocol ---------------------------------------------------------------------

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        with self._cv:
            self._next_id += 1
            mid = self._next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while mid not in self._replies and -1 not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"{method}: no reply in {self.timeout} s")
                self._cv.wait(left)
            reply = self._replies.pop(mid, None) or self._replies[-1]
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def new_page(self, width: int = 1400, height: int = 1000) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page


class Page:
    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def goto(self, url: str) -> None:
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigate {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'")

    def eval(self, expression: str):
        """Value of a JavaScript expression (awaited if it is a promise)."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression[:80]}: {r['exceptionDetails'].get('text')} "
                               f"{r['exceptionDetails'].get('exception', {}).get('description', '')}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.eval(expression)
            except BrowserError:
                last = None  # page mid-navigation
            if last:
                return last
            time.sleep(0.2)
        raise BrowserError(f"timed out waiting for: {expression} (last: {last!r}); "
                           f"url: {self.eval('location.href')}")

    def on_new_document(self, script: str) -> None:
        """Run `script` first in every document this page loads from now on (frames included);
        DevTools' own injection, which a page's Content-Security-Policy does not block."""
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": script})

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element and type `text` as keyboard input (frameworks see real input events)."""
        if not self.eval(f"(e => (e && (e.focus(), true)))(document.querySelector({json.dumps(selector)}))"):
            raise BrowserError(f"no element {selector}")
        self.send("Input.insertText", {"text": text})

    def screenshot(self, path: str, full_page: bool = True) -> None:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            m = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": m["width"], "height": m["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", params)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

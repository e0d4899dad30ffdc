"""A real headless browser for the report tests: Debian's ``chromium`` driven through the
Chrome DevTools protocol over ``--remote-debugging-pipe`` (no extra Python package, no
port). :func:`load` opens a file: URL, waits for the load event and returns the rendered
DOM, values the page's script-free DOM computes (``expr``), every console message, script
exception and browser log entry (failed loads, Content-Security-Policy refusals), and a
screenshot when asked.

The browser is ``$FEDRX_CHROMIUM`` or the first of chromium, chromium-browser,
google-chrome on PATH; :data:`BROWSER` is None when there is none (the tests skip then,
unless ``FEDRX_REQUIRE_BROWSER=1``, which ``.ci/run`` sets after installing chromium, so
CI never skips them silently).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def _find() -> str | None:
    env = os.environ.get("FEDRX_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


BROWSER = _find()
needs_browser = pytest.mark.skipif(
    BROWSER is None and os.environ.get("FEDRX_REQUIRE_BROWSER") != "1",
    reason="no chromium on this machine (Debian: apt-get install chromium; .ci/run installs "
           "it); the report's browser tests need a real browser")


@dataclass
class Page:
    dom: str
    values: Any
    console: list[dict[str, Any]] = field(default_factory=list)
    screenshot: bytes | None = None

    def errors(self) -> list[dict[str, Any]]:
        """Console errors/warnings, exceptions and error/warning log entries."""
        return [m for m in self.console if m["level"] in ("error", "warning")]


class _Cdp:
    def __init__(self, binary: str, profile: str) -> None:
        # chromium's own log: kept to explain a failure (a temp file, not a pipe to fill)
        self._log = tempfile.TemporaryFile()
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        # the child's ends above fd 10, so the redirections below cannot clobber each other
        cmd_r, res_w = (self._high(cmd_r), self._high(res_w))
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-dev-shm-usage",
                "--disable-background-networking", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "--window-size=1280,2000", "about:blank"]
        # chromium reads commands on fd 3 and writes replies on fd 4 (dup2 in the child,
        # before subprocess closes every fd not in pass_fds)
        def fds() -> None:
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        self.proc = subprocess.Popen(args, pass_fds=(3, 4), preexec_fn=fds,
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    @staticmethod
    def _high(fd: int) -> int:
        new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return new

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from chromium")
            ready, _, _ = select.select([self._res_r], [], [], left)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    self._log.seek(0)
                    tail = self._log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"chromium closed the DevTools pipe:\n{tail}")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            e = self._read(deadline)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._res_r)
        self._log.close()


def _console(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", "")))
                            for a in p.get("args", []))
            out.append({"level": {"warn": "warning"}.get(p.get("type"), p.get("type")),
                        "text": text, "source": "console"})
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append({"level": "error", "text": d.get("text", ""), "source": "exception"})
        elif m == "Log.entryAdded":
            en = p.get("entry", {})
            out.append({"level": en.get("level"), "text": en.get("text", ""),
                        "source": en.get("source", "log")})
    return out


def load(path: Path, expr: str = "null", screenshot: bool = False) -> Page:
    """Open ``path`` (a file) in headless chromium; return its rendered DOM, the value of
    the JavaScript expression ``expr`` (evaluated by the test, the page has no script),
    the console and log messages, and a full-page PNG screenshot when asked."""
    if BROWSER is None:
        raise RuntimeError("no chromium found (set FEDRX_CHROMIUM or install chromium)")
    with tempfile.TemporaryDirectory(prefix="fedrx-chromium-") as profile:
        cdp = _Cdp(BROWSER, profile)
        try:
            target = cdp.send("Target.createTarget", {"url": "about:blank"}, timeout=60)
            sess = cdp.send("Target.attachToTarget",
                            {"targetId": target["targetId"], "flatten": True})["sessionId"]
            for dom in ("Runtime", "Log", "Page"):
                cdp.send(f"{dom}.enable", session=sess)
            cdp.events.clear()
            cdp.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=sess)
            cdp.wait_event("Page.loadEventFired")
            # let late console messages (e.g. CSP reports) arrive
            cdp.send("Runtime.evaluate", {"expression": "1"}, session=sess)
            dom_html = cdp.send("Runtime.evaluate", {
                "expression": "document.documentElement.outerHTML",
                "returnByValue": True}, session=sess)["result"]["value"]
            values = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                              session=sess)["result"].get("value")
            shot = None
            if screenshot:
                shot = base64.b64decode(cdp.send("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True}, session=sess)["data"])
            return Page(dom_html, values, _console(cdp.events), shot)
        finally:
            cdp.close()

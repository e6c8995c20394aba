"""Headless Chromium (Debian's package) driven over the DevTools protocol, to look at pages as a
user does: log in with Airflow's session cookie, open a page, wait for what must be on it, save
a screenshot. No WebDriver: the protocol's websocket is enough (websockets is already installed).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import requests
from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Browser:
    def __init__(self, profile: Path, width: int = 1700, height: int = 1100):
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",  # root in CI
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"{CHROMIUM} did not start (exit {self.proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        [page] = [t for t in targets if t["type"] == "page"]
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def login(self, base_url: str, token: str) -> None:
        """Airflow's UI keeps its JWT in the `_token` cookie; the campaign view reads the same."""
        host = urlparse(base_url).hostname
        self.call("Network.setCookie", name="_token", value=token, domain=host, path="/")

    def text(self) -> str:
        return self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")["result"].get(
            "value", ""
        )

    def open(self, url: str, expect: list[str], timeout_s: float = 30) -> str:
        """Open URL and wait until every text in EXPECT is on the page; returns the page's text."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            if all(e in text for e in expect):
                return text
            if time.monotonic() > deadline:
                missing = [e for e in expect if e not in text]
                raise AssertionError(f"{url}: {missing} not on the page after {timeout_s} s; it shows:\n{text[:3000]}")
            time.sleep(0.5)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """What the window shows (the top of the page, as a user first sees it), or the whole page."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing after a failed start
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

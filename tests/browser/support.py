"""Driving the demo page in headless Chromium (Debian's chromium + chromedriver).

Selenium calls block, so tests run them in a thread (``deferToThread``) while
the reactor keeps serving the in-process server.  ``Page`` wraps one browser
holding one demo page and reads the state the page exposes as data attributes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Optional

from twisted.trial import unittest

CHROMIUM = os.environ.get("SYMPLE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SYMPLE_CHROMEDRIVER", "/usr/bin/chromedriver")
#: Where screenshots and failure evidence go: artifacts/ at the top of the checkout.
ARTIFACTS = os.environ.get("SYMPLE_ARTIFACTS", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "artifacts"))
#: Seconds a page gets to reach an expected state.
WAIT = 15.0

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--disable-dev-shm-usage", "--window-size=1280,620",
    # Host candidates only: no mDNS names (unresolvable in containers), and loopback allowed
    # so calls connect even on a machine without a network interface.
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--allow-loopback-in-peer-connection",
)


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def require_browser() -> None:
    """Skip when Chromium or Selenium is missing; fail when SYMPLE_REQUIRE_BROWSER is set."""
    problems = [f"{path} not found" for path in (CHROMIUM, CHROMEDRIVER)
                if not (os.path.isfile(path) and os.access(path, os.X_OK))]
    if importlib.util.find_spec("selenium") is None:
        problems.append("selenium is not installed")
    if not problems:
        return
    message = "; ".join(problems) + (" (apt-get install chromium chromium-driver;"
                                      " pip install selenium)")
    if _truthy(os.environ.get("SYMPLE_REQUIRE_BROWSER")):
        raise AssertionError(f"browser tests required but cannot run: {message}")
    raise unittest.SkipTest(message)


def artifact_path(name: str) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    return os.path.join(ARTIFACTS, name)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


class Page:
    """One headless Chromium showing one demo page."""

    def __init__(self, label: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.label = label
        self.profile = tempfile.mkdtemp(prefix="symple-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM  # never let Selenium Manager fetch a browser
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.closed = False

    # -- reading ------------------------------------------------------------

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def state(self) -> dict:
        """Every data attribute of <body>: conn, call, ice, callEnd, callPeer, peerId, error."""
        return self.js("return Object.assign({}, document.body.dataset)")

    def roster(self) -> list[dict]:
        return self.js("""
            return [...document.querySelectorAll('#roster li')].map((li) => ({
              id: li.dataset.peerId, user: li.dataset.user,
              name: li.querySelector('.name').textContent,
              caps: [...li.querySelectorAll('.cap')].map((c) => c.dataset.cap),
              callable: !li.querySelector('button[data-action=call]').disabled}))""")

    def roster_users(self) -> list[str]:
        return sorted(peer["user"] for peer in self.roster())

    def messages(self, kind: str = "chat") -> list[dict]:
        return self.js("""
            return [...document.querySelectorAll('#messages li')]
              .filter((li) => li.dataset.kind === arguments[0])
              .map((li) => ({from: li.dataset.from || '', own: 'own' in li.dataset,
                             text: li.querySelector('.text') ? li.querySelector('.text').textContent
                                                             : li.textContent}))""", kind)

    def video(self, element_id: str) -> dict:
        return self.js("""
            const v = document.getElementById(arguments[0]);
            return {width: v.videoWidth, height: v.videoHeight, time: v.currentTime,
                    paused: v.paused, hasStream: Boolean(v.srcObject)};""", element_id)

    def text(self, selector: str) -> str:
        return self.driver.find_element("css selector", selector).text

    def visible(self, selector: str) -> bool:
        return self.driver.find_element("css selector", selector).is_displayed()

    # -- acting -------------------------------------------------------------

    def open(self, url: str) -> None:
        self.driver.get(url)

    def click(self, selector: str) -> None:
        self.driver.find_element("css selector", selector).click()

    def type(self, selector: str, text: str, submit: bool = True) -> None:
        from selenium.webdriver.common.keys import Keys
        self.driver.find_element("css selector", selector).send_keys(
            text + (Keys.ENTER if submit else ""))

    def screenshot(self, name: str) -> str:
        path = artifact_path(_safe(name) + ".png")
        self.driver.save_screenshot(path)
        return path

    # -- waiting ------------------------------------------------------------

    def wait(self, condition: Callable[["Page"], Any], what: str, timeout: float = WAIT) -> Any:
        """Poll ``condition(page)`` until truthy; on timeout save evidence and fail."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
                lambda _: condition(self))
        except TimeoutException:
            evidence = self.dump(f"timeout-{what}")
            raise AssertionError(f"{self.label}: timed out after {timeout}s waiting for "
                                 f"{what}; state {self.state()}; see {evidence}") from None

    def wait_state(self, timeout: float = WAIT, **expected: str) -> dict:
        """Wait until each named body data attribute has the expected value (or one of a tuple)."""
        def matches(page: "Page") -> Optional[dict]:
            state = page.state()
            for key, want in expected.items():
                wanted = want if isinstance(want, tuple) else (want,)
                if state.get(key) not in wanted:
                    return None
            return state
        return self.wait(matches, " ".join(f"{k}={v}" for k, v in expected.items()), timeout)

    def dump(self, what: str) -> str:
        """Screenshot, page state and console log under the artifacts directory."""
        base = artifact_path(_safe(f"{self.label}-{what}"))
        try:
            self.driver.save_screenshot(base + ".png")
            with open(base + ".json", "w") as f:
                json.dump({"state": self.state(), "roster": self.roster(),
                           "console": self.driver.get_log("browser")}, f, indent=2)
        except Exception as exc:  # the evidence must never hide the real failure
            return f"{base} (incomplete: {exc})"
        return base + ".json"

    # -- ending -------------------------------------------------------------

    def quit(self) -> None:
        """Close the browser, as a person closing the window would."""
        if not self.closed:
            self.closed = True
            try:
                self.driver.quit()
            finally:
                shutil.rmtree(self.profile, ignore_errors=True)

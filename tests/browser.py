"""Open a page in headless Chromium (Debian's package, /usr/bin/chromium) through
Playwright's Python client, which downloads no browser: what the page shows, read
back as a user's browser renders it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# As the machine's probe starts it: no sandbox (root), no GPU, and none of Chromium's
# own connections (this machine's network is closed).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """The system Chromium; the test is skipped, saying so, where there is none."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium here: `apt-get install chromium` (.ci/run installs it)")
    pytest.importorskip("playwright", reason="playwright is in ganrun[dev]")
    return path


def open_page(page_file: Path, screenshot: Path | None = None, width: int = 1400) -> dict:
    """Load `page_file` as a file:// URL; return the console messages and page errors,
    each ranked table's body rows, every image's (complete, naturalWidth) and each
    curve figure's drawn path count; with `screenshot`, the full page as a PNG."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            messages: list[tuple[str, str]] = []
            page.on("console", lambda m: messages.append((m.type, m.text)))
            page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(Path(page_file).resolve().as_uri(), wait_until="load")
            seen = {
                "messages": messages,
                "requests": requests,
                "tables": page.evaluate(
                    "Array.from(document.querySelectorAll('table.ranked')).map(t =>"
                    " Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c =>"
                    " c.textContent)))"),
                "headers": page.evaluate(
                    "Array.from(document.querySelectorAll('table.ranked')).map(t =>"
                    " Array.from(t.tHead.rows[0].cells).map(c => c.textContent))"),
                "images": page.evaluate(
                    "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"),
                "curves": page.evaluate(
                    "Array.from(document.querySelectorAll('figure.curve')).map(f =>"
                    " [f.dataset.metric, Array.from(f.querySelectorAll('svg path')).filter(p =>"
                    " { const b = p.getBBox(); return b.width > 0 || b.height > 0; }).length,"
                    " f.querySelector('svg').getBoundingClientRect().width])"),
                "text": page.inner_text("body"),
            }
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
            return seen
        finally:
            browser.close()

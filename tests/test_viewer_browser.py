"""The HTML viewer in a real browser: headless Chromium opens an exported page from disk and is
driven through the DevTools protocol (CDP) over ``--remote-debugging-pipe`` — no websocket
library, no network. Checks: the DOM holds one element per tree node, clicking a node shows its
text (hostile text stays text), the threshold slider changes which nodes are marked
``would-prune``, a few thousand nodes render, no script errors; writes
``test-artifacts/viewer.png``.

``python tests/test_viewer_browser.py`` regenerates ``search/viewer/screenshot.png`` for the README.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_export import BT, HOSTILE, make_tree  # noqa: E402

from search.export import export_tree  # noqa: E402
from search.tree import Tree  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
WIDTH, HEIGHT = 1400, 860


def find_chromium() -> str | None:
    for name in (os.environ.get("REWIND_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "/usr/bin/chromium"):
        if name and (path := shutil.which(name)):
            return path
    return None


class Browser:
    """A headless Chromium and a minimal CDP client on its debugging pipe (fd 3 in, fd 4 out;
    messages are JSON terminated by a NUL byte)."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="rewind-chromium-")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        # move the child's ends above fd 9, so putting them at fds 3 and 4 cannot overwrite one another
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={WIDTH},{HEIGHT}",
                 f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"]

        def pipe_fds() -> None:  # runs in the child before exec; fds 3 and 4 are kept open
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.proc = subprocess.Popen([binary, *flags], pass_fds=(3, 4), preexec_fn=pipe_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(child_r)
        os.close(child_w)
        self.buffer, self.next_id, self.events = b"", 0, []
        self.session: str | None = None
        target = self.send("Target.createTarget", url="about:blank", session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True, session=False)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable"):
            self.send(domain)
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_chrome], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit code {self.proc.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, *, session: bool = True, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def js(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def open(self, path: Path, timeout: float = 60) -> None:
        self.send("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + timeout
        while self.js("document.readyState === 'complete' && document.body.dataset.ready === '1'") is not True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path.name} did not finish drawing; errors: {self.errors()}")
            time.sleep(0.05)

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click_element(self, selector: str) -> None:
        """A real mouse click at the centre of the element that ``selector`` finds."""
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                      ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        assert 0 < box[0] < WIDTH and 0 < box[1] < HEIGHT, f"{selector} is off screen at {box}"
        self.click(*box)

    def click_node(self, nid: int) -> None:
        self.click_element(f'[data-node-id="{nid}"] circle.dot')

    def errors(self) -> list[str]:
        return [json.dumps(e["params"])[:300] for e in self.events if e.get("method") == "Runtime.exceptionThrown"]

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.to_chrome, self.from_chrome):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium binary found (apt-get install chromium, or set REWIND_CHROMIUM)")
    b = Browser(binary)
    yield b
    b.close()


def marked(browser: Browser) -> set[int]:
    return set(browser.js("[...document.querySelectorAll('.node.would-prune')].map(e => +e.dataset.nodeId)"))


def expected_marked(tree: Tree, tau: float) -> set[int]:
    return {n.id for n in tree if n.p_backtrack is not None and n.p_backtrack >= tau}


def set_slider(browser: Browser, tau: float) -> None:
    browser.js(f"(() => {{ const s = document.getElementById('threshold'); s.value = '{tau}';"
               " s.dispatchEvent(new Event('input', {bubbles: true})); })()")


@pytest.mark.browser
def test_viewer_in_chromium(browser: Browser, tmp_path: Path) -> None:
    tree = make_tree(40)
    browser.open(export_tree(tree, tmp_path / "tree.html"))
    assert browser.js("document.querySelectorAll('[data-node-id]').length") == len(tree)
    assert browser.js("document.querySelectorAll('.node.status-pruned').length") == len(tree.by_status("pruned"))
    assert browser.js("document.querySelectorAll('.node.chosen').length") == len(tree.chosen)

    # hostile text: shown as text, never run as script
    hostile = len(tree) - 1
    browser.click_node(hostile)
    assert browser.js("document.getElementById('detail-text').textContent") == HOSTILE
    assert browser.js("typeof window.__pwned") == "undefined"

    # a node whose raw trace holds ⟨b⟩: the trace shows one ⌫ per ⟨b⟩, the alive text has none
    nid = next(n.id for n in tree if BT in n.raw_text and n.id != hostile)
    browser.click_node(nid)
    assert browser.js("document.getElementById('detail-text').textContent") == tree[nid].text
    assert browser.js("document.querySelectorAll('#detail-raw .bt').length") == tree[nid].raw_text.count(BT)
    assert browser.js("document.getElementById('detail-raw').textContent") == tree[nid].raw_text.replace(BT, "⌫")
    assert browser.js(f"document.querySelector('[data-node-id=\"{nid}\"]').classList.contains('selected')")

    # the slider: starts at the run's threshold, and moving it moves the would-prune marks
    assert browser.js("document.getElementById('threshold').value") == "0.5"
    assert marked(browser) == expected_marked(tree, 0.5)
    for tau in (0.9, 0.1, 0.35):
        set_slider(browser, tau)
        assert marked(browser) == expected_marked(tree, tau), tau
    assert expected_marked(tree, 0.9) != expected_marked(tree, 0.1)
    box = browser.js("(() => { const r = document.getElementById('threshold').getBoundingClientRect();"
                     " return [r.x, r.y + r.height / 2]; })()")
    browser.click(box[0] + 1, box[1])  # a real click at the slider's left end: τ ≈ 0
    tau = float(browser.js("document.getElementById('threshold').value"))
    assert tau < 0.05 and marked(browser) == expected_marked(tree, tau)

    # collapse a subtree: its descendants hide, the DOM keeps every node
    parent = next(n.id for n in tree if n.id != 0 and tree.children[n.id])
    browser.click_element(f'[data-node-id="{parent}"] text.toggle')
    hidden = browser.js("[...document.querySelectorAll('.node.hidden')].map(e => +e.dataset.nodeId)")
    below = {c for c in range(len(tree)) if parent in tree.path(c)[:-1]}
    assert set(hidden) == below and browser.js("document.querySelectorAll('[data-node-id]').length") == len(tree)
    assert browser.js("document.getElementById('detail-text').textContent") == tree[nid].text  # no select
    browser.click_element(f'[data-node-id="{parent}"] text.toggle')
    assert browser.js("document.querySelectorAll('.node.hidden').length") == 0

    set_slider(browser, 0.5)
    browser.click_node(nid)
    assert browser.errors() == []
    png = browser.screenshot(ARTIFACTS / "viewer.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.browser
def test_viewer_draws_thousands_of_nodes(browser: Browser, tmp_path: Path) -> None:
    tree = Tree(question="a wide tree")
    tree.add_root((1,), "root")
    for i in range(1, 3000):
        tree.add_child((i - 1) // 4, ids=(i,), raw_ids=(i,), text=f"step {i}\n", raw_text=f"step {i}\n",
                       p_backtrack=(i % 100) / 100)
    tree.chosen = tree.path(2999)
    start = time.monotonic()
    browser.open(export_tree(tree, tmp_path / "big.html"))
    assert time.monotonic() - start < 30
    assert browser.js("document.querySelectorAll('[data-node-id]').length") == len(tree)
    # large trees open with the branches off the chosen path collapsed
    visible = browser.js("document.querySelectorAll('.node:not(.hidden)').length")
    assert len(tree.chosen) <= visible < len(tree)
    assert marked(browser) == expected_marked(tree, 0.5)
    assert browser.errors() == []


def readme_screenshot(out: Path = REPO / "search" / "viewer" / "screenshot.png") -> Path:
    """The README's picture: a ~40-node tree with a node that backtracked selected."""
    binary = find_chromium()
    if binary is None:
        raise SystemExit("no Chromium binary found")
    tree = make_tree(40, hostile=False)
    b = Browser(binary)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            b.open(export_tree(tree, Path(tmp) / "tree.html"))
            b.click_node(next(n for n in tree.chosen if BT in tree[n].raw_text) if any(
                BT in tree[n].raw_text for n in tree.chosen) else tree.chosen[-1])
            return b.screenshot(out)
    finally:
        b.close()


if __name__ == "__main__":
    print(readme_screenshot())

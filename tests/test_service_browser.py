"""The shop's snippet (/v1/recctl.js) in a real headless browser: the OS Chromium (tests/browser.py), a
shop page served from another origin (CORS), a page view sent by the snippet, and the visitor's next list
changed by it."""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import FLAGS, chromium
from tests.test_service import KEY, Server, _env, _free_port, _stop, _users, _wait_ready

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>shop</title></head><body>
<div id="before"></div><div id="after"></div><pre id="ack"></pre><pre id="who"></pre><pre id="err"></pre>
<script src="{api}/v1/recctl.js"></script>
<script>
recctl.init({{ endpoint: "{api}", key: "{key}" }});
var before = document.getElementById("before"), after = document.getElementById("after");
recctl.recommend(before, {{ k: 6 }})
  .then(function () {{ return recctl.view("{item}"); }})
  .then(function (ack) {{ document.getElementById("ack").textContent = JSON.stringify(ack);
                          return recctl.recommend(after, {{ k: 6 }}); }})
  .then(function () {{ document.getElementById("who").textContent = recctl.user() + " " + recctl.sessionId(); }})
  .catch(function (e) {{ document.getElementById("err").textContent = String(e); }});
</script></body></html>
"""


@pytest.fixture(scope="module")
def shop_and_api(quick_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Server]]:
    if chromium() is None:
        pytest.skip("the OS chromium is not installed")
    root = tmp_path_factory.mktemp("browser")
    project = root / "shop"
    shutil.copytree(quick_demo, project, ignore=shutil.ignore_patterns("*.lock", "*.serve", "*.inbox"))
    site = root / "site"
    site.mkdir()
    page_port, api_port = _free_port(), _free_port()
    origin = f"http://127.0.0.1:{page_port}"
    env = {**_env(), "RECCTL_SERVICE__CORS_ORIGINS": json.dumps([origin])}
    proc = subprocess.Popen([sys.executable, "-m", "recctl", "serve", "--port", str(api_port)], cwd=project,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    api = Server(f"http://127.0.0.1:{api_port}", project, proc)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        _wait_ready(api)
        item = _users(project, 1)[0]
        item = api.get(f"/v1/recommend/user/{item}?k=1")[1]["items"][0]["item_id"]
        (site / "index.html").write_text(PAGE.format(api=api.url, key=KEY, item=item))
        yield f"{origin}/index.html", api
    finally:
        httpd.shutdown()
        _stop(api)


def _dom(url: str) -> str:
    exe = chromium()
    assert exe is not None
    with tempfile.TemporaryDirectory(prefix="recctl-chromium-") as profile:
        done = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                               "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout


def _items(dom: str, element: str) -> list[str]:
    block = re.search(rf'<div id="{element}">(.*?)</div>', dom, re.S)
    assert block, f"#{element} is not in the page"
    return re.findall(r'data-item-id="([^"]+)"', block.group(1))


def test_the_snippet_collects_a_page_view_and_the_next_list_changes(shop_and_api: tuple[str, Server]) -> None:
    url, api = shop_and_api
    dom = _dom(url)
    err = re.search(r'<pre id="err">(.*?)</pre>', dom, re.S)
    assert err and err.group(1) == "", err.group(1) if err else dom[-2000:]
    ack = json.loads(re.search(r'<pre id="ack">(.*?)</pre>', dom, re.S).group(1))  # type: ignore[union-attr]
    assert ack == {"accepted": 1, "rejected": 0, "errors": []}
    who = re.search(r'<pre id="who">visitor:([0-9a-f]{32}) ([0-9a-f]{32})</pre>', dom)
    assert who, "the visitor and session ids from the snippet's cookies"
    before, after = _items(dom, "before"), _items(dom, "after")
    assert len(before) == 6 and len(after) == 6
    assert before != after, "the page view changed the visitor's next list"
    status, doc = api.get(f"/v1/recommend/user/visitor:{who.group(1)}?k=6")
    assert status == 200 and doc["state"] == "returning" and [it["item_id"] for it in doc["items"]] == after
    status, text = api.get("/metrics")
    assert 'recctl_events_total{outcome="accepted"} 1.0' in text
    status, js = api.get("/v1/recctl.js")
    assert status == 200 and "window" in js and "recctl_vid" in js

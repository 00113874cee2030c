"""The monitor's dashboard in a real browser: a cluster with a canary and drifting traffic,
rendered by headless Chromium (Debian's `chromium`, installed by deploy/local/setup.sh).

The DOM is checked after the page scripts ran (`--dump-dom`): the overview lists the workers,
the replicas and the traffic split; a version page has its latency and throughput charts drawn
by uPlot (canvas elements), its drift per feature with the distributions drawn, and the alerts
section. Screenshots are kept as test artifacts in $KILN_TEST_ARTIFACTS (default
`test-artifacts/` under CARGO_TARGET_DIR, or under target/): dashboard.png (the drifting
version's page) and dashboard-cluster.png (the overview).
"""

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from harness import ROOT, wait_for
from test_control_plane import deploy, digits_v2, ready
from test_drift import send

WINDOW = (1400, 2000)


def artifacts_dir() -> Path:
    if os.environ.get("KILN_TEST_ARTIFACTS"):
        out = Path(os.environ["KILN_TEST_ARTIFACTS"])
    else:
        out = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


def chromium(*args, timeout=90):
    """Runs headless Chromium with a throw-away profile; returns its stdout."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed (run deploy/local/setup.sh)")
    with tempfile.TemporaryDirectory(prefix="kiln-chromium-") as profile:
        out = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}",
             # Let deferred scripts and the charts finish before the dump or the screenshot.
             "--run-all-compositor-stages-before-draw", "--virtual-time-budget=3000",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", *args],
            capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"chromium failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def dom(url):
    return chromium("--dump-dom", url)


def screenshot(url, path: Path):
    path.unlink(missing_ok=True)
    chromium(f"--screenshot={path}", url)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == WINDOW, (width, height)
    assert len(data) > 30_000, f"{path} is only {len(data)} bytes: a blank page?"
    print(f"screenshot {path} ({len(data)} bytes)")


def get(url):
    return urllib.request.urlopen(url, timeout=5).read().decode()


def section(html, sid):
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def test_dashboard_in_headless_chromium(cluster, heldout):
    c = cluster
    base = f"http://{next(iter(c.monitors.values()))[1]}"
    deploy(c, "digits", 1, "2", digits_v2(c))
    wait_for("digits v2 ready", lambda: ready(c, version="2"), timeout=60)
    c.kiln("split", "digits", "1=80", "2=20")

    x = heldout["inputs"]
    send(c, x, "1")  # the reference's distribution
    send(c, np.clip(x + 6.0, 0, 16).astype(np.float32), "2")  # brighter everywhere: drift
    # Workers push closed windows; the page draws distributions once a report is judged.
    for v in ["1", "2"]:
        wait_for(f"v{v} drift judged on its page",
                 lambda: 'data-feature="' in get(f"{base}/models/digits/{v}"), timeout=45)

    # A second window of traffic, so the charts draw lines, not single points.
    def two_windows():
        send(c, np.clip(x[:40] + 6.0, 0, 16).astype(np.float32), "2")
        data = re.search(r'id="series-data">(.*?)</script>', get(f"{base}/models/digits/2"))
        return data and len(json.loads(data.group(1))["t"]) >= 2
    wait_for("two windows of v2 traffic", two_windows, timeout=40, interval=2)

    overview = dom(base + "/")
    workers = section(overview, "workers")
    for w in c.workers:
        assert f'<span class="worker-id">{w}</span>' in workers, w
    replicas = section(overview, "replicas")
    assert replicas.count('class="replica-worker"') == len(c.replicas()) == 3
    assert replicas.count(">READY<") == 3
    deployments = section(overview, "deployments")
    assert 'class="split-part"' in deployments and "80.0 %" in deployments
    assert 'href="/models/digits/2"' in deployments
    section(overview, "alerts")

    page = dom(base + "/models/digits/2")
    traffic = section(page, "traffic")
    for chart in ["latency-chart", "throughput-chart"]:
        m = re.search(rf'<div class="chart" id="{chart}"([^>]*)>(.*?)</div>\s*(<h3|<p)', traffic,
                      re.S)
        assert m and 'data-drawn="true"' in m.group(1), f"{chart} not drawn"
        assert "<canvas" in m.group(2), f"{chart} has no canvas"
    drift = section(page, "drift")
    assert "dataset drift" in drift and "no dataset drift" not in drift
    figures = re.findall(r'<figure class="feature" data-feature="(\d+)">', drift)
    assert len(figures) >= 8, figures
    assert drift.count("<rect") >= 2 * len(figures)
    assert drift.count(">input") >= 64 or drift.count("<tr>") >= 64
    section(page, "alerts")
    steady = section(dom(base + "/models/digits/1"), "drift")
    assert "no dataset drift" in steady

    out = artifacts_dir()
    screenshot(base + "/models/digits/2", out / "dashboard.png")
    screenshot(base + "/", out / "dashboard-cluster.png")

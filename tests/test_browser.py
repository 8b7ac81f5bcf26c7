"""One real-browser test: JupyterLab + headless Debian chromium drive notebooks/explorer.ipynb.

Needs `apt-get install -y chromium` (make browser) and the `playwright` Python package (the test
extra); `playwright install` is never run: the system chromium is used via executable_path.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_claims import frontier_rows

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed "
                                 "(apt-get install -y chromium, or `make browser`)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _store(root: Path) -> None:
    """A tiny results store: outputs/quick with λ ∈ {0, 0.25, 1}, two seeds."""
    for s in range(2):
        for lam, method, shift in ((0.0, "unmixed", 0.0), (0.25, "mixed", -0.1), (1.0, "mixed", -0.3)):
            d = root / "outputs" / "quick" / "runs" / f"lam{lam}-seed{s}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps({"rows": frontier_rows(method, lam, s, shift, 0.01)}))


@pytest.fixture
def lab(tmp_path):
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(REPO / "notebooks" / "explorer.ipynb", work / "explorer.ipynb")
    _store(work)
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               IPYTHONDIR=str(tmp_path / "ipy"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               EELIB_OUTPUTS=str(work / "outputs"))  # the notebooks' outputs root (eelib.notebook.outputs)
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                             f"--port={port}", "--IdentityProvider.token=", "--ServerApp.password=",
                             f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
                             "--ServerApp.disable_check_xsrf=True"]
                            + (["--allow-root"] if os.geteuid() == 0 else []),
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"jupyter lab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not start within 60 s")
        yield url, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_explorer_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright
    url, tmp = lab
    shots = tmp / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp / "user-data"), executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            viewport={"width": 1400, "height": 1000})
        try:
            page = ctx.new_page()
            page.goto(f"{url}/lab/tree/explorer.ipynb", timeout=60_000)
            page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')",
                                   timeout=60_000)
            # wait for the kernel, then run every cell
            page.wait_for_selector(".jp-Notebook-cell", timeout=30_000)
            page.wait_for_function(
                "() => { const w = window.jupyterapp.shell.currentWidget;"
                " return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                " && w.sessionContext.session.kernel.status === 'idle'; }", timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            caption = page.locator(".eelib-caption")
            caption.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.eelib-chart svg text'))"
                ".some(t => t.textContent.includes('mixed at λ = 1 '))", timeout=60_000)
            assert "λ = 1" in caption.inner_text()
            svg_before = page.locator(".eelib-chart svg").first.inner_html()
            page.screenshot(path=str(shots / "explorer-before.png"), full_page=True)

            # move the λ slider one step left (1.0 -> 0.25) with the keyboard
            handle = page.locator(".widget-slider .noUi-handle").first
            handle.focus()
            handle.press("ArrowLeft")
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.eelib-caption'))"
                ".some(c => c.textContent.includes('λ = 0.25'))", timeout=30_000)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.eelib-chart svg text'))"
                ".some(t => t.textContent.includes('mixed at λ = 0.25'))", timeout=30_000)
            svg_after = page.locator(".eelib-chart svg").first.inner_html()
            assert svg_after != svg_before                   # the chart was re-rendered with new data
            assert page.locator("table.eelib-table").count() >= 1
            page.screenshot(path=str(shots / "explorer-after.png"), full_page=True)
        finally:
            ctx.close()
    out = REPO / "outputs" / "browser-test"
    try:   # keep the screenshots where a person can look at them
        out.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, out / png.name)
    except OSError:
        pass
    assert (shots / "explorer-after.png").stat().st_size > 10_000

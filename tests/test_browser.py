"""The course in a real JupyterLab, in a real browser (Debian's Chromium driven by Playwright).

Notebooks 00 and 05 are run with "Run All Cells" as a student would; the explorer is used through its
controls; then 05 is saved, the server stopped, and the notebook reopened by a fresh server, and by one
whose empty signature store trusts nothing (as on another machine): the explorer's cell must show its
static grid and a sentence, not an error or a widget's repr. Screenshots go to build/browser/.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from support.lab_server import copy_notebooks, lab_server

from sprc_lib.course.explorer import WIDGET_TEXT
from sprc_lib.paths import checkout

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = checkout() / "build" / "browser"
# As the machine's notes advise for a closed network: no background connections, a fresh profile.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_S = 240

if not Path(CHROMIUM).is_file():
    if os.environ.get("CI"):
        raise RuntimeError("the browser test needs Chromium: `apt-get install -y chromium` (.ci/run does)")
    pytest.skip("no Chromium here (`apt-get install -y chromium`); CI installs it", allow_module_level=True)
from playwright.sync_api import sync_playwright  # noqa: E402  (after the Chromium check, like the skip)


def _settings(folder: Path) -> Path:
    """JupyterLab settings: every cell in the page (no windowing), so the checks see every output."""
    tracker = folder / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    news = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))  # no "Jupyter news?" toast over the screenshots
    return folder


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    return copy_notebooks(tmp_path_factory.mktemp("browser") / "notebooks")


@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def _open(page, lab, name: str) -> None:
    page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}&reset")  # a fresh workspace: this notebook alone
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)  # the kernel is up and connected


def _busy(page) -> bool:
    return page.evaluate("() => [...document.querySelectorAll('.jp-InputPrompt')]"
                         ".some(p => p.textContent.includes('*'))")


def _all_run(page) -> bool:
    """Every code cell shows an execution count (JupyterLab runs "Run All" cell after cell); a cell whose source
    is hidden (an exercise's solution) shows no prompt."""
    return page.evaluate("() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                         ".every(p => p.textContent.trim() === '' || /\\[\\d+\\]/.test(p.textContent))")


def _run_all(page) -> None:
    """Run > Run All Cells, as a student clicks it (again if the first click landed while the menu opened)."""
    for _ in range(3):
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        item = page.get_by_role("menuitem", name="Run All Cells", exact=True)
        item.wait_for(state="visible")
        time.sleep(0.5)
        item.click()
        started = time.monotonic() + 10
        while not _busy(page) and time.monotonic() < started:
            time.sleep(0.1)
        if _busy(page):
            break
    assert _busy(page), "Run All Cells did not start the notebook"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while _busy(page) or not _all_run(page):
        assert time.monotonic() < deadline, "the notebook did not finish in time (or a cell failed and stopped it)"
        time.sleep(1)


def _until(condition, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the page did not change in time"
        time.sleep(0.2)


def _save(page) -> None:
    """The notebook toolbar's save button (a shortcut would go to a focused text box); done when the tab's
    "Last Saved" time changes (a late output may mark the notebook changed again just after)."""
    tab = page.locator(".lm-TabBar-tab.jp-mod-current").first
    before = tab.get_attribute("title")
    page.locator(".jp-NotebookPanel-toolbar [data-command='docmanager:save']").first.click()
    _until(lambda: tab.get_attribute("title") != before, timeout_s=30)


def _errors(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return [f"{o['ename']}: {o['evalue']}" for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]


def _explorer(page):
    return page.locator(".jp-Cell").filter(has=page.locator(".widget-dropdown")).last


def test_notebook_00_runs_in_the_browser(course, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    with lab_server(course, tmp_path / "lab.log", _settings(tmp_path / "settings")) as lab:
        _open(page, lab, "00_setup_and_tour.ipynb")
        _run_all(page)
        _save(page)
        page.screenshot(path=str(SHOTS / "00_after_run_all.png"))
    assert not _errors(course / "00_setup_and_tour.ipynb")
    assert page.locator(".jp-OutputArea-output img").count() >= 3  # the figures rendered as images


def test_the_explorer_in_05_works_and_a_saved_copy_shows_its_grid(course, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    with lab_server(course, tmp_path / "lab.log", _settings(tmp_path / "settings")) as lab:
        _open(page, lab, "05_evaluation.ipynb")
        _run_all(page)
        page.screenshot(path=str(SHOTS / "05_after_run_all.png"), full_page=True)
        assert not _errors_in_page(page)
        cell = _explorer(page)
        cell.scroll_into_view_if_needed()
        status, image = cell.locator(".widget-html").first, cell.locator(".jp-OutputArea-output img").first
        assert cell.locator(".widget-dropdown select").count() == 1  # controls, not a text repr or an error
        before, picture = status.inner_text(), image.get_attribute("src")
        page.screenshot(path=str(SHOTS / "05_explorer.png"))
        cell.locator(".widget-dropdown select").select_option(index=3)
        _until(lambda: image.get_attribute("src") != picture and status.inner_text() != before)
        reference = cell.get_by_placeholder("a gallery image name")
        reference.fill("no-such-image")
        reference.press("Enter")
        _until(lambda: "no-such-image" in status.inner_text())  # the message, under the controls
        page.screenshot(path=str(SHOTS / "05_unknown_reference.png"))
        _save(page)
    assert not _errors(course / "05_evaluation.ipynb")
    reopened = browser.new_page(viewport={"width": 1400, "height": 1000})
    with lab_server(course, tmp_path / "lab2.log", _settings(tmp_path / "settings2")) as lab:
        _open(reopened, lab, "05_evaluation.ipynb")  # a fresh server: the widgets' models are gone
        cell = _explorer_static(reopened)
        cell.scroll_into_view_if_needed()
        time.sleep(2)  # let every output render
        reopened.screenshot(path=str(SHOTS / "05_reopened.png"))
        assert cell.locator(".jp-OutputArea-output img").first.is_visible()
        shown = [o.inner_text() for o in cell.locator(".jp-OutputArea-output").all() if o.is_visible()]
        assert not any("Error displaying widget" in text for text in shown), shown
    untrusted = browser.new_page(viewport={"width": 1400, "height": 1000})
    with lab_server(course, tmp_path / "lab3.log", _settings(tmp_path / "settings3"), tmp_path / "data3") as lab:
        _open(untrusted, lab, "05_evaluation.ipynb")  # as on another machine: the saved copy is not trusted
        cell = _explorer_static(untrusted)
        cell.scroll_into_view_if_needed()
        time.sleep(2)
        untrusted.screenshot(path=str(SHOTS / "05_reopened_untrusted.png"))
        assert cell.locator(".jp-OutputArea-output img").first.is_visible()
        shown = " ".join(o.inner_text() for o in cell.locator(".jp-OutputArea-output").all() if o.is_visible())
        assert "Error displaying widget" not in shown and "VBox(" not in shown, shown
        assert WIDGET_TEXT in shown  # a sentence where the controls were, not a widget's repr


def _errors_in_page(page) -> list[str]:
    return [t for t in page.locator(".jp-OutputArea-output").all_inner_texts() if "Traceback (most recent" in t]


def _explorer_static(page):
    """The explorer's cell after a reopen: the one whose source builds the widget."""
    return page.locator(".jp-Cell").filter(has_text="ExplorerWidget(explorer)").last

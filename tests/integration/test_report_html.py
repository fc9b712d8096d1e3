"""The HTML report opened in a real headless browser (Debian's chromium through playwright).

One history of six scenarios over three quarters is written through the real store; the real
command line writes report.html; chromium opens it with every request recorded and anything
but the file itself refused, and must show it without a console error, a row and an RTO chart
per scenario, the hostile reason as text (its script never runs), a screenshot and a PDF.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.report_helpers import DAMAGED_DISK, PLANS, fill_history, write_scenarios

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = "<script>alert(1)</script>"
NEVER_TESTED = "billing-mysql"


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of a populated history, written by the real CLI from its own folder."""
    folder = tmp_path_factory.mktemp("report")
    scenarios = write_scenarios(folder / "scenarios")
    url = f"sqlite:///{folder / 'history.db'}"
    fill_history(url, scenarios, datetime.now(UTC), hostile=HOSTILE)
    done = run_cli(
        "report", "--since", "200d", "-o", "report.html", cwd=folder, env={"RESTORE_TESTS_DB": url}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote report.html (html, 6 scenarios: 3 ok")
    return folder / "report.html"


@pytest.fixture(scope="module")
def browser() -> Any:
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is not installed (run scripts/setup.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield launched
        launched.close()


class Watched:
    """A page whose requests, console errors, page errors and dialogs are recorded; every
    request other than the report file itself is refused."""

    def __init__(self, browser: Any, allowed: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.context.route("**/*", lambda route: self._route(route, allowed))
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("dialog", self._dialog)

    def _route(self, route: Any, allowed: str) -> None:
        if route.request.url == allowed:
            route.continue_()
        else:
            route.abort()

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def test_the_request_recorder_sees_and_refuses_a_request_to_the_network(browser):
    watched = Watched(browser, allowed="file:///nothing")
    watched.page.set_content('<img src="http://127.0.0.1:9/pixel.png">')
    watched.page.wait_for_load_state("networkidle")

    assert watched.requests == ["http://127.0.0.1:9/pixel.png"]
    watched.context.close()


def test_the_report_renders_offline_with_a_row_and_a_chart_per_scenario(browser, report_file):
    url = report_file.as_uri()
    watched = Watched(browser, allowed=url)
    watched.page.goto(url, wait_until="networkidle")

    assert watched.requests == [url]
    assert watched.errors == []
    rows = watched.page.locator("#coverage tbody tr")
    assert rows.count() == len(PLANS)
    names = [rows.nth(index).get_attribute("data-scenario") for index in range(rows.count())]
    assert sorted(names) == sorted(plan.name for plan in PLANS)
    for name in names:
        chart = watched.page.locator(f'figure.rto-chart[data-scenario="{name}"] svg')
        assert chart.count() == (0 if name == NEVER_TESTED else 1), name
        if name != NEVER_TESTED:
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 80, name
    assert watched.page.locator("figure.phase-chart svg").count() == 1
    watched.context.close()


def test_a_hostile_reason_is_shown_as_text_and_its_script_never_runs(browser, report_file):
    url = report_file.as_uri()
    watched = Watched(browser, allowed=url)
    watched.page.goto(url, wait_until="networkidle")

    assert watched.dialogs == []
    assert watched.page.evaluate("document.querySelectorAll('script').length") == 0
    failures = watched.page.locator("#failures").inner_text()
    assert f"{DAMAGED_DISK} {HOSTILE}" in failures
    verdict = watched.page.locator('#coverage tr[data-scenario="erp-vm"]').inner_text()
    assert HOSTILE in verdict
    watched.context.close()


def test_the_report_is_captured_as_a_screenshot_and_printed_to_pdf(browser, report_file):
    url = report_file.as_uri()
    watched = Watched(browser, allowed=url)
    watched.page.goto(url, wait_until="networkidle")
    screenshot = report_file.parent / "report.png"
    pdf = report_file.parent / "report.pdf"

    watched.page.screenshot(path=str(screenshot), full_page=True)
    watched.page.pdf(path=str(pdf), format="A4", print_background=True)

    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert screenshot.stat().st_size > 50_000
    document = pdf.read_bytes()
    assert document.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page\b", document))
    assert 2 <= pages <= 12, f"{pages} pages"
    assert watched.errors == []
    watched.context.close()


def test_the_page_references_nothing_outside_itself(report_file):
    html = report_file.read_text()

    assert "<script" not in html
    assert re.findall(r"\bsrc=", html) == []
    references = re.findall(r'(?:href|xlink:href)="([^"]*)"', html)
    assert all(reference.startswith("#") for reference in references)
    assert set(re.findall(r"url\(([^)]*)\)", html)) <= {
        f"#{match}" for match in re.findall(r'id="([^"]*)"', html)
    }
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html

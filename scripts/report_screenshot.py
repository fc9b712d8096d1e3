"""Make docs/report-screenshot.png: the HTML report of a sample history, as chromium shows it.

The history is the one the report's tests use (tests/report_helpers.py: six scenarios of three
clients over three quarters), written to a temporary folder; the real command line writes the
report; Debian's chromium (headless, through playwright) takes the top of the page, and the PNG
is reduced to a 256-colour palette to stay small in the repository.

    .venv/bin/python scripts/report_screenshot.py [--output docs/report-screenshot.png]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.report_helpers

from PIL import Image  # noqa: E402  (Pillow, of the test extra)
from playwright.sync_api import sync_playwright  # noqa: E402

from tests.integration.test_report_html import BROWSER_ARGS, CHROMIUM  # noqa: E402
from tests.report_helpers import fill_history, write_scenarios  # noqa: E402

WIDTH, HEIGHT = 1180, 1900  # the header, the coverage table and the first charts


def write_report(folder: Path) -> Path:
    scenarios = write_scenarios(folder / "scenarios")
    fill_history(f"sqlite:///{folder / 'results.db'}", scenarios, datetime.now(UTC))
    # Relative names, as a user in that folder would run it: the page shows them.
    environment = {**os.environ, "RESTORE_TESTS_DB": "sqlite:///results.db"}
    command = [sys.executable, str(ROOT / "cli.py"), "report", "--since", "200d", "-o", "r.html"]
    subprocess.run(command, cwd=folder, env=environment, check=True)
    return folder / "r.html"


def screenshot(page_file: Path, output: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(page_file.as_uri(), wait_until="networkidle")
        page.screenshot(path=str(output), clip={"x": 0, "y": 0, "width": WIDTH, "height": HEIGHT})
        browser.close()
    image = Image.open(output).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(output, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "report-screenshot.png")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        screenshot(write_report(Path(folder)), arguments.output)
    print(f"{arguments.output}: {arguments.output.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()

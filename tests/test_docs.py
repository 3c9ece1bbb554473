"""The book (``make docs``): its build fails on errors, and it works in a real browser.

* The Sphinx configuration turns a broken cross-reference and a notebook cell error into a
  failed build (both checked on a tiny throw-away book that uses ``docs/conf.py``).
* The built site (``docs/_build/html``, from ``make docs``) is loaded page by page in headless
  Chromium through chromedriver (selenium): no page may log a console error, every ``<img>``
  must have loaded (natural width > 0), every chapter with figures must show them, the maths
  must be typeset by the bundled MathJax, and the exercises' solutions must be collapsed. A
  screenshot of chapter 2 is saved to ``docs/_build/screenshots/`` (not committed).

Without a built site, Chromium, chromedriver or selenium the browser test is skipped with the
reason; CI sets ``SPECNORM_REQUIRE_BROWSER=1``, which turns every such skip into a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SITE = DOCS / "_build" / "html"
REQUIRED = os.environ.get("SPECNORM_REQUIRE_BROWSER") == "1"
CHAPTERS_WITH_FIGURES = ["01", "02", "03", "04", "05"]


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"SPECNORM_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def _sphinx(source: Path, out: Path, execution: str) -> subprocess.CompletedProcess:
    # the notebooks' "python3" kernel must be this interpreter: put its folder first on PATH
    path = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    env = dict(os.environ, SPECNORM_NB_EXECUTION=execution, MPLBACKEND="Agg", PATH=path)
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-c", str(DOCS), "-D", "nb_execution_cache_path=" + str(out / "cache"),
         str(source), str(out / "html")],
        capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def tiny_book(tmp_path: Path) -> Path:
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    source = tmp_path / "src"
    source.mkdir()
    return source


def test_build_fails_on_a_broken_cross_reference(tiny_book: Path, tmp_path: Path) -> None:
    (tiny_book / "index.md").write_text("# Tiny\n\nSee {ref}`no-such-label`.\n")
    result = _sphinx(tiny_book, tmp_path, "off")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "no-such-label" in result.stderr
    (tiny_book / "index.md").write_text("(here)=\n# Tiny\n\nSee {ref}`here`.\n")
    result = _sphinx(tiny_book, tmp_path, "off")
    assert result.returncode == 0, result.stderr  # the same book with a valid reference builds


def test_build_fails_on_a_notebook_cell_error(tiny_book: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Broken"),
                      nbformat.v4.new_code_cell("raise ValueError('cell error on purpose')")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, tiny_book / "broken.ipynb")
    (tiny_book / "index.md").write_text("# Tiny\n\n```{toctree}\nbroken\n```\n")
    result = _sphinx(tiny_book, tmp_path, "force")
    assert result.returncode != 0
    assert "ExecutionError" in result.stderr and "broken.ipynb" in result.stderr, result.stderr


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    if not (SITE / "index.html").is_file():
        _unavailable(f"no built book at {SITE}; run `make docs` first")
    binary, driver_path = _chromium(), shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _unavailable("Chromium and chromedriver are not installed "
                     "(apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[docs]')")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="specnorm-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def site_url():
    """The built site served over HTTP on localhost (as a reader's web server would)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _wait(driver, script: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(script):
            return True
        time.sleep(0.1)
    return False


def test_every_page_loads_cleanly_in_chromium(browser, site_url: str) -> None:
    pages = sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")
                   if not p.relative_to(SITE).as_posix().startswith(("_static/", "_sources/")))
    assert "index.html" in pages and any(p.startswith("notebooks/") for p in pages)
    browser.get_log("browser")  # drop anything logged before the first page
    problems: list[str] = []
    images_seen: dict[str, int] = {}
    for page in pages:
        browser.get(f"{site_url}/{page}")
        _wait(browser, "return document.readyState === 'complete' && "
                       "Array.from(document.images).every(i => i.complete)")
        for entry in browser.get_log("browser"):
            if entry.get("level") == "SEVERE":
                problems.append(f"{page}: console error: {entry.get('message')}")
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete, "
            "i.naturalWidth]);")
        images_seen[page] = len(images)
        for src, complete, width in images:
            if not complete or not width:
                problems.append(f"{page}: image did not load: {src}")
    assert not problems, "\n".join(problems)
    for chapter in CHAPTERS_WITH_FIGURES:
        page = next(p for p in pages if p.startswith(f"notebooks/{chapter}_"))
        assert images_seen[page] >= 1, f"{page} shows no figure"


def test_chapter_maths_solutions_and_screenshot(browser, site_url: str) -> None:
    page = next(p.relative_to(SITE).as_posix() for p in SITE.glob("notebooks/02_*.html"))
    browser.get(f"{site_url}/{page}")
    assert _wait(browser, "return document.querySelectorAll('mjx-container').length > 10"), (
        "MathJax did not typeset the chapter's formulas")
    solutions = browser.execute_script(
        "return Array.from(document.querySelectorAll('details')).filter("
        "d => d.textContent.includes('BEGIN SOLUTION')).map(d => d.open);")
    assert len(solutions) >= 3, "the exercises' solutions should sit in collapsible blocks"
    assert not any(solutions), "a solution is shown open"
    exercises = browser.execute_script(
        "return document.querySelectorAll('.exercise').length;")
    assert exercises >= 3
    shots = DOCS / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    target = shots / "02_power_iteration_and_gradient.png"
    assert browser.save_screenshot(str(target)) and target.stat().st_size > 10_000

"""The HTML pages in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)
opens report.html, index.html and a comparison page from file:// with the network cut off and checks that
nothing fails to load, nothing leaves the machine, a flame graph zooms and searches, a table sorts.

Screenshots of each page land in the test's temporary directory (pytest prints where): look at them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results import load

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference-docker"
RUNNERS = ("2026-12-01/runners-process", "2026-12-01/runners-docker")  # a quick run on each runner
DRIVER = shutil.which("chromedriver")
BROWSER = shutil.which("chromium")

pytestmark = pytest.mark.skipif(not (DRIVER and BROWSER), reason="needs Debian's chromium and chromium-driver "
                                                                  "(apt-get install chromium chromium-driver)")


def bench(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The published reference's committed pages (test_reference.py checks they are what the code writes), and
    in a copy of the results beside them, the index and a comparison page drawn now."""
    root = tmp_path_factory.mktemp("results")
    shutil.copytree(REFERENCE, root / "reference-docker")
    for run in RUNNERS:
        shutil.copytree(ROOT / "results" / run, root / run)
    bench("compare", *(str(root / run) for run in RUNNERS), "--html", str(root / "compare.html"))
    bench("index", str(root))
    return {"report": root / "reference-docker" / "report.html",
            "profile": root / "reference-docker" / "profile" / "report.html",
            "index": root / "index.html", "compare": root / "compare.html"}


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    # No network at all: a request for anything but a file:// URL fails, and shows in the resource entries.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    yield driver
    driver.quit()


def open_page(browser, path: Path, shots: Path) -> None:
    """The page loaded (get() waits for its load event: every image and frame), its top and its first plots and
    flame graphs photographed."""
    from selenium.webdriver.common.by import By

    browser.get(path.as_uri())
    name = f"{path.parent.name}-{path.stem}"
    browser.save_screenshot(str(shots / f"{name}.png"))
    for selector in ("section figure.plot", "div.flames"):
        if found := browser.find_elements(By.CSS_SELECTOR, selector):
            browser.execute_script("arguments[0].scrollIntoView()", found[0])
            browser.save_screenshot(str(shots / f"{name}-{selector.split('.')[-1]}.png"))


def requests_made(browser) -> list[str]:
    """Every URL the page and its frames loaded, from the resource timing entries."""
    return browser.execute_script("""
        const urls = performance.getEntriesByType("resource").map(e => e.name);
        for (const frame of document.querySelectorAll("iframe")) {
          try { urls.push(...frame.contentWindow.performance.getEntriesByType("resource").map(e => e.name)); }
          catch (error) { /* a file:// frame is another origin: its own script ran inside it */ }
        }
        return urls;""")


def assert_clean(browser, path: Path) -> None:
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, (path, errors)
    outside = [url for url in requests_made(browser) if not url.startswith("file://")]
    assert not outside, (path, outside)
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
    assert not broken, (path, broken)


def test_every_page_loads_offline_with_no_console_error_and_nothing_from_outside(browser, pages, tmp_path):
    for name, path in pages.items():
        open_page(browser, path, tmp_path)
        assert_clean(browser, path)
        if name == "report":  # the plots, as SVG
            assert browser.execute_script("return document.images.length") >= 40
        if name == "index":
            links = browser.execute_script("return Array.from(document.querySelectorAll('td a')).map(a => a.href)")
            assert {pages["report"].as_uri(), pages["profile"].as_uri()} <= set(links)
        if name == "compare":
            assert "ranges overlap in" in browser.find_element("css selector", "main").text
    print(f"screenshots: {tmp_path}")


def test_a_table_sorts_on_a_click_on_its_heading(browser, pages, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, pages["report"], tmp_path)
    table = browser.find_element(By.CSS_SELECTOR, "section#plaintext table.sortable")

    def column(index: int) -> list[str]:
        return [row.find_elements(By.TAG_NAME, "td")[index].text for row in table.find_elements(By.CSS_SELECTOR,
                                                                                                 "tbody tr")]

    def value(text: str) -> float:
        return float(text.split(" ")[0].replace(",", ""))

    heading = table.find_elements(By.TAG_NAME, "th")[1]
    heading.click()
    ascending = [value(text) for text in column(1)]
    assert ascending == sorted(ascending) and heading.get_attribute("aria-sort") == "ascending"
    heading.click()
    assert [value(text) for text in column(1)] == sorted(ascending, reverse=True)
    table.find_elements(By.TAG_NAME, "th")[0].click()
    assert column(0) == sorted(column(0))
    browser.save_screenshot(str(tmp_path / "sorted.png"))


def test_a_flame_graph_loads_zooms_on_a_click_and_answers_its_search(browser, pages, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, pages["profile"], tmp_path)
    frames = browser.find_elements(By.CSS_SELECTOR, "figure.flame iframe")
    profiling = load(pages["profile"].parent).profiling
    assert len(frames) == sum(bool(p.svg) for p in profiling.profiles) + len(profiling.diff_pairs) > 10
    for frame in frames:  # each one loaded its SVG and ran its script
        browser.switch_to.frame(frame)
        assert browser.execute_script("return document.documentElement.localName") == "svg"
        assert browser.execute_script("return typeof zoom === 'function' && !!document.getElementById('frames')")
        browser.switch_to.default_content()
    frame = frames[0]
    browser.execute_script("arguments[0].scrollIntoView()", frame)
    browser.switch_to.frame(frame)
    # The widest frame narrower than 90 % (inferno writes widths in percent): a click must widen it to 100 %.
    target = browser.execute_script("""
        const width = g => parseFloat(g.querySelector('rect').getAttribute('width'));
        return Array.from(document.querySelectorAll('#frames > g')).filter(g => width(g) < 90)
          .sort((a, b) => width(b) - width(a))[0];""")
    before = float(target.find_element(By.TAG_NAME, "rect").get_attribute("width").rstrip("%"))
    target.click()
    assert browser.execute_script("return document.getElementById('unzoom').classList.contains('hide')") is False
    assert float(target.find_element(By.TAG_NAME, "rect").get_attribute("width").rstrip("%")) > 99 > before
    browser.switch_to.default_content()
    frame.screenshot(str(tmp_path / "zoomed.png"))
    browser.switch_to.frame(frame)
    browser.execute_script("search('epoll|poll|select')")  # what its Search button prompts for
    matched = browser.execute_script("return document.getElementById('matched').textContent")
    assert matched.startswith("Matched: ") and float(matched.split()[1].rstrip("%")) > 0, matched
    browser.switch_to.default_content()
    frame.screenshot(str(tmp_path / "searched.png"))

"""Real headless Chromium: the MLflow UI shows a finished sweep (parent, trials, curves),
and the `cpsweep report` page renders its tables and charts and sorts them.

The MLflow 3 UI is a React single-page app: every check waits for the DOM it needs.
A screenshot of the experiment's chart view is kept in tests/tracking/artifacts/.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tracking.conftest import EPOCHS, IN_CI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).parent / "artifacts" / "mlflow_ui.png"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
METRICS = ("val/acc", "rotation/mean")
CARD = "[data-testid='experiment-view-compare-runs-card']"
WAIT_S = 120  # the SPA and its API calls are slow on a loaded 2-core machine


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        reason = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
        if IN_CI:
            pytest.fail(f"CI is set: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="cpsweep-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1700,1200")
    # An explicit driver path: Selenium Manager never looks for (or downloads) a browser.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        import shutil

        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver: Any, what: str, condition: Any) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S, 0.5, ignored_exceptions=[StaleElementReferenceException])
    try:
        return wait.until(condition)
    except TimeoutException:
        path = SCREENSHOT.with_name("failure.png")
        path.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(path))
        pytest.fail(f"MLflow UI at {driver.current_url}: no {what} after {WAIT_S} s (see {path})")


def _text(driver: Any) -> str:
    return str(driver.execute_script("return document.body ? document.body.innerText : ''"))


def _run_link(run_id: str) -> str:
    return f"a[href$='/runs/{run_id}']"


def _close_assistant(driver: Any) -> None:
    """MLflow 3.17 opens an assistant side panel on first load; it hides half the page."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(
        By.CSS_SELECTOR, "[data-assistant-ui='true'] button[aria-label='Close']"
    ):
        if button.is_displayed():
            button.click()


def _search_charts(driver: Any, pattern: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = _wait(
        driver,
        "metric chart search box",
        lambda d: d.find_element(By.CSS_SELECTOR, "input[placeholder='Search metric charts']"),
    )
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(pattern)


_CARDS_JS = """
return Array.from(document.querySelectorAll(arguments[0])).map(card => {
  const title = card.querySelector("h4[title]");
  return {metric: title ? title.getAttribute("title") : null,
          points: card.querySelectorAll(".scatterlayer .trace path.point").length,
          legend: card.textContent};
});
"""


def _charts(driver: Any) -> dict[str, dict[str, Any]]:
    """Metric key -> {points: plotted markers, legend: the card's text}, read in one go
    (React re-renders cards while data arrives; element handles would go stale)."""
    return {c["metric"]: c for c in driver.execute_script(_CARDS_JS, CARD) if c["metric"]}


def _check_curves(driver: Any, names: list[str], where: str) -> None:
    """Both metrics charted, one marker per epoch for every trial, each trial in the legend."""
    _search_charts(driver, "|".join(METRICS))
    want = EPOCHS * len(names)

    def complete(d: Any) -> dict[str, dict[str, Any]] | None:
        cards = _charts(d)
        return cards if all(cards.get(m, {}).get("points") == want for m in METRICS) else None

    cards = _wait(
        driver, f"{' and '.join(METRICS)} charts, {want} points each, on the {where}", complete
    )
    for metric in METRICS:
        for name in names:
            assert f"{name} ({metric})" in cards[metric]["legend"], (metric, name, cards[metric])


def test_mlflow_ui_shows_sweep_trials_and_their_curves(
    finished_sweep, start_mlflow_server, browser
) -> None:
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    summary = finished_sweep.summary
    exp_id, parent_id = summary["mlflow"]["experiment_id"], summary["mlflow"]["parent_run_id"]
    client = MlflowClient(finished_sweep.uri)
    trials = {
        t["mlflow_run_id"]: client.get_run(t["mlflow_run_id"]).info.run_name
        for t in summary["trials"]
    }
    names = sorted(trials.values())
    server = start_mlflow_server(finished_sweep.uri)  # the sweep's own sqlite store
    ui = f"{server.url}/#/experiments/{exp_id}"

    # The parent run's page names the sweep and links every trial as a child run.
    browser.get(f"{ui}/runs/{parent_id}")
    _wait(
        browser,
        "child run links",
        lambda d: all(d.find_elements(By.CSS_SELECTOR, _run_link(r)) for r in trials),
    )
    page = _text(browser)
    assert "Child runs" in page and all(n in page for n in names)
    assert "cpsweep.kind" in page

    # The experiment's runs in chart view: the parent row, expanded to its trials.
    browser.get(f"{ui}/runs?compareRunsMode=CHART&workflowType=machine_learning")
    parent = _wait(
        browser, "parent run row", lambda d: d.find_element(By.CSS_SELECTOR, _run_link(parent_id))
    )
    _close_assistant(browser)
    if not browser.find_elements(By.CSS_SELECTOR, _run_link(next(iter(trials)))):
        # The expand (+) button sits in the same run-name cell as the parent's link.
        parent.find_element(
            By.XPATH, "./ancestor::div[contains(@class,'ag-cell')][1]//button"
        ).click()
    _wait(
        browser,
        "trial rows under the parent",
        lambda d: all(d.find_elements(By.CSS_SELECTOR, _run_link(r)) for r in trials),
    )
    _check_curves(browser, names, "experiment chart view")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))

    # One trial's own metrics page charts the same two curves for that trial alone.
    run_id, name = next(iter(trials.items()))
    browser.get(f"{ui}/runs/{run_id}/model-metrics")
    _wait(browser, "trial run page", lambda d: name in _text(d))
    _close_assistant(browser)
    _check_curves(browser, [name], "trial's model-metrics page")


_IMAGES_JS = """
return Array.from(document.images).map(i => ({src: i.getAttribute("src"), w: i.naturalWidth}));
"""
_COLUMN_JS = """
const t = document.querySelectorAll("table.sortable")[0];
return Array.from(t.tBodies[0].rows).map(r => r.cells[arguments[0]].textContent);
"""


def test_report_page_shows_every_trial_its_charts_and_sorts(
    finished_sweep, browser, tmp_path
) -> None:
    """`cpsweep report` output opened from disk: tables, every chart decoded, sorting works."""
    from selenium.webdriver.common.by import By

    from service.report import TRIAL_COLUMNS, build_report, load_sweep

    page = build_report(load_sweep(finished_sweep.experiment, finished_sweep.uri), tmp_path)
    browser.get(page.resolve().as_uri())
    text = _text(browser)
    assert f"cpsweep report: {finished_sweep.experiment}" in text
    for t in finished_sweep.summary["trials"]:
        assert t["trial_id"] in text
    images = browser.execute_script(_IMAGES_JS)
    assert len(images) == 8 and all(i["w"] > 100 for i in images), images  # PNGs decoded

    # Clicking "val acc" sorts the trial table ascending, a second click descending.
    col = [h for h, _, _ in TRIAL_COLUMNS].index("val acc")
    header = browser.find_elements(By.CSS_SELECTOR, "table.sortable")[0].find_elements(
        By.TAG_NAME, "th"
    )[col]
    header.click()
    up = [float(v) for v in browser.execute_script(_COLUMN_JS, col)]
    assert up == sorted(up) and len(up) == len(finished_sweep.summary["trials"])
    header.click()
    assert [float(v) for v in browser.execute_script(_COLUMN_JS, col)] == sorted(up, reverse=True)

"""Real headless Chromium: the MLflow UI shows a finished sweep (parent, trials, curves),
and the `cpsweep report` page renders its tables and charts and sorts them.

The MLflow 3 UI is a React single-page app: every check waits for the DOM it needs.
A screenshot of the experiment's chart view is kept in tests/tracking/artifacts/.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.requires import CHROMEDRIVER, CHROMIUM, CHROMIUM_AND_DRIVER, requires
from tests.tracking.conftest import EPOCHS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

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
METRICS = ("rotation/mean", "cp/critical", "val/acc")
CARD = "[data-testid='experiment-view-compare-runs-card']"
WAIT_S = 120  # the SPA and its API calls are slow on a loaded 2-core machine


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    requires(CHROMIUM_AND_DRIVER)
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
    """The metrics charted, one marker per epoch for every trial, each trial in the legend
    (two charts at a time: the UI draws only the charts within the window)."""
    _check_some(driver, names, where, METRICS[:2])
    _check_some(driver, names, where, METRICS[2:])


def _check_some(driver: Any, names: list[str], where: str, metrics: tuple[str, ...]) -> None:
    _search_charts(driver, "|".join(metrics))
    want = EPOCHS * len(names)

    def complete(d: Any) -> dict[str, dict[str, Any]] | None:
        cards = _charts(d)
        return cards if all(cards.get(m, {}).get("points") == want for m in metrics) else None

    cards = _wait(
        driver, f"{' and '.join(metrics)} charts, {want} points each, on the {where}", complete
    )
    for metric in metrics:
        for name in names:
            assert f"{name} ({metric})" in cards[metric]["legend"], (metric, name, cards[metric])


_ROWS_JS = """
// Runs table (ag-grid): row index -> run name (pinned column) and the asked columns' text.
const rows = {};
for (const cell of document.querySelectorAll(".ag-row [col-id]")) {
  const i = cell.closest(".ag-row").getAttribute("row-index");
  rows[i] = rows[i] || {};
  rows[i][cell.getAttribute("col-id")] = cell.textContent.trim();
}
return Object.values(rows);
"""
USAGE_COLUMNS = ("energy/Wh", "co2/g", "cost/usd")


def _table_rows(driver: Any) -> list[dict[str, str]]:
    rows = list(driver.execute_script(_ROWS_JS))
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.with_name("runs_table.json").write_text(json.dumps(rows, indent=1))
    return rows


def _usage_cells(rows: list[dict[str, str]], names: list[str]) -> dict[str, dict[str, str]] | None:
    """Trial name -> {energy/Wh, co2/g, cost/usd: shown text}, once every trial row has them."""
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        name = next((n for n in names for v in row.values() if v.endswith(n)), None)
        cells = {m: row.get(f"metrics.`{m}`", "") for m in USAGE_COLUMNS}
        if name and all(cells.values()):
            out[name] = cells
    return out if set(out) == set(names) else None


def _expand_parent(driver: Any, parent_id: str, trials: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    parent = _wait(
        driver, "parent run row", lambda d: d.find_element(By.CSS_SELECTOR, _run_link(parent_id))
    )
    _close_assistant(driver)
    if not driver.find_elements(By.CSS_SELECTOR, _run_link(next(iter(trials)))):
        # The expand (+) button sits in the same run-name cell as the parent's link.
        parent.find_element(
            By.XPATH, "./ancestor::div[contains(@class,'ag-cell')][1]//button"
        ).click()
    _wait(
        driver,
        "trial rows under the parent",
        lambda d: all(d.find_elements(By.CSS_SELECTOR, _run_link(r)) for r in trials),
    )


def _shot(driver: Any, name: str) -> None:
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT.with_name(name)))


def test_mlflow_ui_shows_sweep_trials_and_their_curves(
    finished_sweep, start_mlflow_server, browser
) -> None:
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    from service.tracking.schema import EXPERIMENT_TAGS, runs_view_url, trial_run_name

    summary = finished_sweep.summary
    exp_id, parent_id = summary["mlflow"]["experiment_id"], summary["mlflow"]["parent_run_id"]
    client = MlflowClient(finished_sweep.uri)
    trials = {
        t["mlflow_run_id"]: client.get_run(t["mlflow_run_id"]).info.run_name
        for t in summary["trials"]
    }
    names = sorted(trials.values())
    # Named for what varies: the arm spelled out, the searched learning rate, the seed.
    assert names == sorted(
        trial_run_name({"arm": t["arm"], "params": t["params"]}, seed=0) for t in summary["trials"]
    )
    assert "critical-period lr=0.05 s0" in names and "baseline (full recipe) lr=0.05 s0" in names
    assert EXPERIMENT_TAGS.items() <= client.get_experiment(exp_id).tags.items()
    server = start_mlflow_server(finished_sweep.uri)  # the sweep's own sqlite store
    ui = f"{server.url}/#/experiments/{exp_id}"

    # The link cpsweep prints lands on the training runs (not the GenAI overview), in a
    # fresh browser profile, with the usage columns of cpsweep's shared view.
    browser.get(runs_view_url(server.url, exp_id))
    _expand_parent(browser, parent_id, trials)
    assert "/runs" in browser.current_url and "/overview" not in browser.current_url
    cells = _wait(
        browser,
        "energy, CO2 and cost cells of every trial",
        lambda d: _usage_cells(_table_rows(d), names),
    )
    _shot(browser, "mlflow_runs_table.png")
    for metric in USAGE_COLUMNS:
        shown = [cells[n][metric] for n in names]
        # Legible numbers (no cut-off 0.0000...), non-zero and telling the trials apart.
        assert all(float(v) > 0 and len(v) <= 10 for v in shown), (metric, shown)
        assert len(set(shown)) == len(names), (metric, shown)

    # The parent run's page names the sweep and links every trial as a child run.
    browser.get(f"{ui}/runs/{parent_id}?workflowType=machine_learning")
    # (A hash change keeps the old page's DOM for a moment: wait for this page's text.)
    _wait(
        browser,
        "child run links",
        lambda d: (
            "Child runs" in _text(d)
            and all(d.find_elements(By.CSS_SELECTOR, _run_link(r)) for r in trials)
        ),
    )
    page = _wait(
        browser,
        "trial names",
        lambda d: (lambda t: t if all(n in t for n in names) else None)(_text(d)),
    )
    assert "cpsweep.kind" in page and "cpsweep.usage" not in page

    # The chart view: rotation, accuracy and the end of the period, a line per trial.
    browser.get(runs_view_url(server.url, exp_id, charts=True))
    _expand_parent(browser, parent_id, trials)
    _check_curves(browser, names, "experiment chart view")
    _shot(browser, "mlflow_ui.png")

    # One trial's own metrics page charts the same curves for that trial alone.
    run_id, name = next(iter(trials.items()))
    browser.get(f"{ui}/runs/{run_id}/model-metrics?workflowType=machine_learning")
    _wait(browser, "trial run page", lambda d: name in _text(d))
    _close_assistant(browser)
    _check_curves(browser, [name], "trial's model-metrics page")

    # The sweep's report inside MLflow's artifact viewer: every image decoded, the whole
    # trial table within the page's width.
    browser.get(f"{ui}/runs/{parent_id}/artifacts/report/index.html?workflowType=machine_learning")
    frame = _wait(browser, "report frame", lambda d: d.find_element(By.CSS_SELECTOR, "iframe"))
    _close_assistant(browser)
    browser.switch_to.frame(frame)
    try:
        images = _wait(
            browser,
            "the report's 8 decoded images",
            lambda d: (lambda i: i if len(i) == 8 and all(x["w"] > 100 for x in i) else None)(
                d.execute_script(_IMAGES_JS)
            ),
        )
        assert all(i["src"].startswith("data:image/png") for i in images)
        fits = browser.execute_script(_FITS_JS)
        assert fits["right"] <= fits["width"] + 1, fits
    finally:
        browser.switch_to.default_content()
    _shot(browser, "mlflow_report.png")


_FITS_JS = """
const t = document.querySelector("table.sortable");
return {right: t.getBoundingClientRect().right, width: document.documentElement.clientWidth};
"""


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

    from service.reporting.report import build_report
    from service.reporting.rows import TRIAL_COLUMNS
    from service.tracking.reader import load_sweep

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

"""Real headless Chromium: the link `cpsweep run` prints opens on the sweep's trials and
their curves, the MLflow UI shows the sweep (parent, trials, curves), and the `cpsweep
report` page renders its tables and charts and sorts them.

The MLflow 3 UI is a React single-page app: every check waits for the DOM it needs.
Screenshots are kept in tests/tracking/artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reference import REPO
from tests.requires import CHROMEDRIVER, CHROMIUM, CHROMIUM_AND_DRIVER, requires
from tests.tracking.conftest import EPOCHS, MlflowServer

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
# The curves the printed link's view charts first, one line per trial.
VIEW_METRICS = ("rotation/mean", "cp/critical", "val/acc", "val/loss")
CARD = "[data-testid='experiment-view-compare-runs-card']"
WAIT_S = 120  # the SPA and its API calls are slow on a loaded 2-core machine
DEFAULT_UI = "http://127.0.0.1:5000"  # where the printed `mlflow ui` serves


@contextlib.contextmanager
def _chromium() -> Iterator[Any]:
    """Headless Chromium with a profile of its own (a first visit), removed afterwards."""
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with _chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def sweep_ui(finished_sweep, start_mlflow_server) -> MlflowServer:
    """`mlflow server` on the finished sweep's own sqlite store."""
    return start_mlflow_server(finished_sweep.uri)


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


def _shot(driver: Any, name: str) -> None:
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT.with_name(name)))


def _printed_link(summary: dict[str, Any], monkeypatch: Any, capsys: Any) -> str:
    """The link `cpsweep run` prints for `summary`'s sweep: the command's own output, with
    the sweep itself (`run_sweep`) replaced by the one that already ran."""
    import service.sweeps.run
    from service.cli import main
    from trainables.core.imports import IMPORT_PATH_ENV

    monkeypatch.setenv(IMPORT_PATH_ENV, os.environ.get(IMPORT_PATH_ENV, ""))  # restored after
    from service.results import SweepSummary

    typed = SweepSummary.model_validate(summary)  # what run_sweep returns
    monkeypatch.setattr(service.sweeps.run, "run_sweep", lambda *a, **k: typed)
    capsys.readouterr()
    assert main(["run", str(REPO / "search_spaces" / "quickstart.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Compare the trials in MLflow"))
    return lines[at + 1].strip()


_FIRST_SCREEN_JS = """
// What the first screen shows, read in one go: run links in the runs table and chart
// cards, each with its place on the page and its legend entries ("<run> (<metric>)").
const seen = r => r.width > 0 && r.bottom > 0 && r.top < window.innerHeight;
const rows = Array.from(document.querySelectorAll(".ag-row a[href*='/runs/']")).map(a => ({
  href: a.getAttribute("href"), text: a.textContent.trim(), seen: seen(a.getBoundingClientRect())}));
const cards = Array.from(document.querySelectorAll(arguments[0])).map(card => {
  const title = card.querySelector("h4[title]");
  const metric = title ? title.getAttribute("title") : null;
  return {metric: metric, seen: seen(card.getBoundingClientRect()),
          points: card.querySelectorAll(".scatterlayer .trace path.point").length,
          legend: Array.from(card.querySelectorAll("span")).map(s => s.textContent.trim())
            .filter(t => metric && t.endsWith(` (${metric})`))};
});
return {rows: rows, cards: cards};
"""


def test_printed_link_opens_on_every_trial_and_its_curves(
    finished_sweep, sweep_ui, monkeypatch, capsys
) -> None:
    """A new user's first look: the printed link, opened as printed in a fresh browser,
    nothing clicked, shows every trial as a row by name and a line per trial in each of
    the view's charts; the sweep's own run is neither a row nor a legend entry."""
    from mlflow.tracking import MlflowClient

    summary = finished_sweep.summary
    parent_id = summary["mlflow"]["parent_run_id"]
    client = MlflowClient(finished_sweep.uri)
    runs = {t["mlflow_run_id"]: client.get_run(t["mlflow_run_id"]) for t in summary["trials"]}
    names = {run_id: r.info.run_name for run_id, r in runs.items()}
    parent_name = client.get_run(parent_id).info.run_name

    link = _printed_link(summary, monkeypatch, capsys)
    # `mlflow ui` serves 127.0.0.1:5000; this test's server has a port of its own.
    assert link.startswith(f"{DEFAULT_UI}/#/"), link
    want_points = EPOCHS * len(runs)

    def first_screen(d: Any) -> dict[str, Any] | None:
        shown = d.execute_script(_FIRST_SCREEN_JS, CARD)
        rows = {r["href"].rsplit("/", 1)[-1]: r for r in shown["rows"]}
        cards = {c["metric"]: c for c in shown["cards"] if c["metric"] in VIEW_METRICS}
        complete = set(rows) >= set(runs) and all(
            cards.get(m, {}).get("points") == want_points for m in VIEW_METRICS
        )
        return {"rows": rows, "cards": cards} if complete else None

    with _chromium() as driver:  # a first visit: no view of this experiment remembered
        driver.get(sweep_ui.url + link.removeprefix(DEFAULT_UI))
        screen = _wait(
            driver, f"{len(runs)} trial rows and {want_points} points per chart", first_screen
        )
        _shot(driver, "printed_link.png")
    rows, cards = screen["rows"], screen["cards"]
    # Every trial a row, by its name, on the first screen; the sweep's run is not a row.
    assert {i: r["text"] for i, r in rows.items()} == names, rows
    assert all(r["seen"] for r in rows.values()), rows
    for metric in VIEW_METRICS:
        card = cards[metric]
        assert card["seen"], (metric, card)
        # One legend entry per trial, none for the sweep's run (it has no such curve).
        assert sorted(card["legend"]) == sorted(f"{n} ({metric})" for n in names.values())
        assert not any(e.startswith(f"{parent_name} (") for e in card["legend"]), card
    # Each trial its own colour: the UI's default (a hash of the run id) can repeat one.
    assert len({r.data.tags.get("mlflow.runColor") for r in runs.values()}) == len(runs)


def test_mlflow_ui_shows_sweep_trials_and_their_curves(finished_sweep, sweep_ui, browser) -> None:
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    from service.tracking.schema import EXPERIMENT_TAGS, trial_run_name
    from service.tracking.view import runs_view_url

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
    ui = f"{sweep_ui.url}/#/experiments/{exp_id}"

    # The sweep's view as a table lands on the training runs (not the GenAI overview)
    # with the usage columns of cpsweep's shared view, a row per trial.
    browser.get(runs_view_url(sweep_ui.url, exp_id, parent_id))
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
    from service.reporting.rows import trial_columns
    from service.tracking.reader import load_sweep

    page = build_report(load_sweep(finished_sweep.experiment, finished_sweep.uri), tmp_path)
    browser.get(page.resolve().as_uri())
    text = _text(browser)
    assert f"cpsweep report: {finished_sweep.experiment}" in text
    for t in finished_sweep.summary["trials"]:
        assert t["trial_id"] in text
    images = browser.execute_script(_IMAGES_JS)
    assert len(images) == 8 and all(i["w"] > 100 for i in images), images  # PNGs decoded

    # Clicking "val/acc (max)" sorts the trial table ascending, a second click descending.
    col = [h for h, _, _ in trial_columns()].index("val/acc (max)")
    header = browser.find_elements(By.CSS_SELECTOR, "table.sortable")[0].find_elements(
        By.TAG_NAME, "th"
    )[col]
    header.click()
    up = [float(v) for v in browser.execute_script(_COLUMN_JS, col)]
    assert up == sorted(up) and len(up) == len(finished_sweep.summary["trials"])
    header.click()
    assert [float(v) for v in browser.execute_script(_COLUMN_JS, col)] == sorted(up, reverse=True)

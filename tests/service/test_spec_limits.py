"""Spec limits, names and non-finite numbers, the API's back-pressure gates and the Ray
token's repr, without a server."""

from __future__ import annotations

import asyncio
import threading

import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from service.api.guards import HeavyGate, RayGate
from service.jobs.client import RayToken, RayUnreachable
from service.limits import LIMITS_CONTEXT, SERVER_LIMITS, SpecLimits
from service.spec import SweepSpec, count_trials

BASE = {"name": "lim", "train": {"epochs": 2, "data": {"name": "digits"}}}


def _grids(n: int, size: int) -> dict[str, object]:
    return {f"optim.p{i}": {"grid": list(range(size))} for i in range(n)}


def test_count_trials_is_grids_times_arms_times_samples() -> None:
    spec = SweepSpec.model_validate(
        {
            **BASE,
            "search_space": {
                "optim.lr": {"grid": [0.01, 0.1, 1.0]},
                "optim.momentum": {"uniform": [0, 0.9]},
            },
            "arms": {"a": {}, "b": {}},
            "baseline_arm": True,
            "num_samples": 4,
        }
    )
    assert count_trials(spec) == 3 * 3 * 4  # arms a, b + baseline


def test_the_cli_allows_more_than_the_server() -> None:
    raw = {**BASE, "search_space": {"optim.lr": {"grid": [0.01, 0.1]}}, "num_samples": 600}
    SweepSpec.model_validate(raw)  # 1200 trials: fine locally
    with pytest.raises(ValidationError, match=r"1\.2e\+03 trials.*over the limit of this server"):
        SweepSpec.model_validate(raw, context={LIMITS_CONTEXT: SERVER_LIMITS})
    custom = SpecLimits(max_trials=5000, source="--max-trials 5000")
    SweepSpec.model_validate(raw, context={LIMITS_CONTEXT: custom})


def test_huge_grids_fail_before_any_path_is_validated() -> None:
    raw = {**BASE, "search_space": _grids(20, 10)}  # 1e20 trials, paths all invalid
    with pytest.raises(ValidationError, match=r"1e\+20 trials") as err:
        SweepSpec.model_validate(raw)
    assert len(err.value.errors()) == 1 and "unknown" not in str(err.value)  # no path checks
    with pytest.raises(ValidationError, match="at most 1000 items"):
        SweepSpec.model_validate({**BASE, "search_space": {"optim.lr": {"grid": [0.1] * 1001}}})


@pytest.mark.parametrize(
    ("scaling", "says"),
    [
        ({"num_workers": 33}, "scaling.num_workers: 33"),
        ({"num_workers": 4, "cpus_per_worker": 128}, "512 CPUs per trial"),
        ({"num_workers": 17, "use_gpu": True}, "17 GPUs per trial"),
    ],
)
def test_scaling_limits_on_the_server(scaling: dict[str, object], says: str) -> None:
    raw = {**BASE, "scaling": scaling}
    SweepSpec.model_validate(raw)
    with pytest.raises(ValidationError, match=says):
        SweepSpec.model_validate(raw, context={LIMITS_CONTEXT: SERVER_LIMITS})


@pytest.mark.parametrize("name", ["..", ".", ".x", "-x", "_x", "a/b", "x" * 101, ""])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="starting with a letter or digit"):
        SweepSpec.model_validate({**BASE, "name": name})


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"train": {"optim": {"lr": float("nan")}}}, "train.optim.lr: nan"),
        ({"accounting": {"carbon_g_per_kwh": float("inf")}}, "carbon_g_per_kwh: inf"),
        ({"accounting": {"energy_usd_per_kwh": float("inf")}}, "energy_usd_per_kwh: inf"),
        ({"search_space": {"optim.lr": {"grid": [0.1, float("-inf")]}}}, "grid[1]: -inf"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_path(
    patch: dict[str, object], path: str
) -> None:
    with pytest.raises(ValidationError, match="not a finite number") as err:
        SweepSpec.model_validate({**BASE, **patch})
    assert path in str(err.value)


def test_ray_token_repr_hides_the_value() -> None:
    token = RayToken("s3cr3t-value-0123456789", "$RAY_AUTH_TOKEN")
    assert "s3cr3t" not in repr(token) and "s3cr3t" not in str(token)
    assert "$RAY_AUTH_TOKEN" in repr(token)


def test_heavy_gate_answers_503_with_retry_after_when_full() -> None:
    release = threading.Event()

    async def main() -> list[object]:
        gate = HeavyGate(2, "spec validations")
        running = [asyncio.ensure_future(gate.run(release.wait, 10)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(HTTPException) as full:
            await gate.run(lambda: None)
        release.set()
        done = await asyncio.gather(*running)
        return [full.value.status_code, full.value.headers, *done, await gate.run(lambda: 7)]

    code, headers, *rest = asyncio.run(main())
    assert code == 503 and headers == {"Retry-After": "2"}
    assert rest == [True, True, 7]  # capacity is back once the first two ended


def test_ray_gate_reports_a_hung_ping_within_its_wait() -> None:
    hang = threading.Event()

    async def main() -> tuple[object, object]:
        gate = RayGate(lambda: hang.wait(30) and None, wait_s=0.2)
        first = await gate.check()
        with pytest.raises(RayUnreachable, match=r"did not answer within 0\.2 s"):
            await gate.call(lambda: "never called")
        hang.set()
        return first, None

    first, _ = asyncio.run(main())
    assert isinstance(first, RayUnreachable)


def test_mlflow_error_bodies_stay_out_of_logs() -> None:
    """Row 5: an MLflow URI that answers with a page: its body must not reach the log."""
    import http.server
    import io
    import logging

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from service.logredact import install

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>internal-secret-page</html>"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    logger = logging.getLogger("test.redact")
    logger.propagate = False
    out = io.StringIO()
    logger.addHandler(logging.StreamHandler(out))
    install(logger)
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(MlflowException) as err:
            MlflowClient(tracking_uri=uri).get_experiment_by_name("x")
        assert "internal-secret-page" in str(err.value)  # MLflow does quote it
        logger.warning("MLflow failed: %s", err.value)
        try:
            raise err.value
        except MlflowException:
            logger.exception("again")
    finally:
        server.shutdown()
    text = out.getvalue()
    assert "internal-secret-page" not in text
    assert text.count("Response body: <withheld from logs>") >= 2 and "404" in text

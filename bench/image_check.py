"""Build the Ray image for real with podman, then run it as Kubernetes would (`make image-check`).

Where Docker Hub is out of reach (this machine, CI) `rayproject/ray` cannot be pulled, so
the image is built on a plain Debian bookworm with python3 (`mmdebstrap`, imported into
podman as localhost/debian-py:bookworm) through the Dockerfile's BASE and DEBIAN_IMAGE
build arguments. The build reaches the package registries (apt for Fashion-MNIST, pip for
the pinned wheels); everything after it runs without a network or on an internal one:

1. `cpsweep --help` and a 1-epoch `cpsweep train` in the image, as its non-root user, with
   a read-only root filesystem and tmpfs for /tmp (HOME=/tmp), `--network none`.
2. A Ray head and a worker container on an internal podman network with token auth (the
   token in the environment, as KubeRay injects it), and a third container, like the
   RayJob submitter, that runs `cpsweep submit search_spaces/quickstart.yaml` against the
   head's Jobs API with the token from a read-only file (RAY_AUTH_TOKEN_PATH). The head
   keeps results on a host directory standing in for the PersistentVolumeClaim.

Timings, the image size and the outcome go to bench/results/image_check.json
(BENCHMARKS.md, "The Ray image, built and run with podman"). Needs root and
`apt-get install podman buildah mmdebstrap runc`.
"""

from __future__ import annotations

import argparse
import configparser
import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomllib
from _common import REPO, RESULTS, command_line, now_iso, setup_logging, write_json

log = logging.getLogger("image_check")

BASE_IMAGE = "localhost/debian-py:bookworm"
IMAGE = "localhost/cpsweep/ray:0.1.0"
WORK = Path(os.environ.get("CPSWEEP_IMAGE_WORK", "/var/tmp/cpsweep-image"))
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
# crun fails here ("cgroups in hybrid mode not supported"); without the ulimits line
# runc fails with "setrlimit RLIMIT_NPROC: Operation not permitted".
NEEDED_CONF = {"containers": {"default_ulimits": []}, "engine": {"cgroup_manager": "cgroupfs"}}
TOOLS = ("podman", "mmdebstrap", "runc")
RUN = ["--runtime", "runc"]
# As the Kubernetes pods run it: read-only root, the image's own user, scratch in tmpfs.
LOCKED = ["--read-only", "--tmpfs", "/tmp:rw,mode=1777", "-e", "HOME=/tmp"]


class CheckError(Exception):
    """A precondition or a step failed; the message says what and how to fix it."""


def sh(cmd: list[str], *, timeout: float = 600, check: bool = True, **kw: Any) -> str:
    """stdout of `cmd`; its stderr goes to the debug log, and into the error if it fails."""
    log.debug("$ %s", shlex.join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if proc.stderr:
        log.debug("%s", proc.stderr[-2000:])
    if check and proc.returncode != 0:
        raise CheckError(
            f"`{shlex.join(cmd)}` exited {proc.returncode}:\n{proc.stdout[-3000:]}"
            f"{proc.stderr[-3000:]}"
        )
    return proc.stdout


def container_log(name: str) -> str:
    proc = subprocess.run(
        ["podman", "logs", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return proc.stdout[-3000:]


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.monotonic()
    log.info("%s ...", name)
    yield
    timings[name] = round(time.monotonic() - start, 1)
    log.info("%s: %.1f s", name, timings[name])


def preflight() -> None:
    if os.geteuid() != 0:
        raise CheckError("run as root: podman here is rootful (sudo make image-check)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise CheckError(
            f"missing {', '.join(missing)}: apt-get install podman buildah mmdebstrap runc"
        )


def ensure_containers_conf(path: Path = CONTAINERS_CONF) -> str:
    """Write the two settings podman needs here, or check they are there (idempotent).
    An existing file is never rewritten; a section that is absent is appended."""
    text = path.read_text() if path.exists() else ""
    try:
        current = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CheckError(f"{path} is not valid TOML ({e}); fix or remove it") from None
    wrong, missing_sections = [], []
    for section, values in NEEDED_CONF.items():
        if section not in current:
            missing_sections.append(section)
            continue
        for key, value in values.items():
            if current[section].get(key) != value:
                wrong.append(f"[{section}] {key} = {json.dumps(value)}")
    if wrong:
        raise CheckError(f"{path}: set {'; '.join(wrong)} (podman with runc needs them here)")
    if not missing_sections:
        return "unchanged"
    lines = [text.rstrip("\n")] if text.strip() else []
    for section in missing_sections:
        body = [f"{k} = {json.dumps(v)}" for k, v in NEEDED_CONF[section].items()]
        lines.append(f"[{section}]\n" + "\n".join(body))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(lines) + "\n")
    return "written"


def ensure_base_image(timings: dict[str, float]) -> None:
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE]).returncode == 0:
        return
    rootfs = WORK / "rootfs.tar"
    with timed(timings, "base_image_s"):
        sh(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
            ]
        )
        sh(["podman", "import", str(rootfs), BASE_IMAGE])
        rootfs.unlink()


def _host_pip_settings() -> dict[str, str]:
    """The host's pip settings that reach an index: its CA bundle (a TLS-intercepting
    proxy), extra indexes and find-links. The build uses the same, so it installs
    what the host can."""
    out = sh([sys.executable, "-m", "pip", "config", "list"], check=False)
    settings = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.split(".", 1)[-1]
        if name in ("cert", "index-url", "extra-index-url", "find-links"):
            settings[name] = value.strip().strip("'\"")
    return settings


def build_mounts() -> list[str]:
    """-v options for `podman build`: a pip.conf with the host's settings, the files
    and local directories it names, read-only. Nothing of it stays in the image."""
    settings = _host_pip_settings()
    args: list[str] = []
    config = configparser.ConfigParser()
    config["global"] = {}
    for name, value in settings.items():
        if name == "cert":
            args += ["-v", f"{value}:/etc/pip-host-ca.crt:ro"]
            config["global"]["cert"] = "/etc/pip-host-ca.crt"
            continue
        config["global"][name] = value
        for item in value.split():
            local = Path(item.removeprefix("file://"))
            if local.is_absolute() and local.exists():
                # A local index's pages link to ../../files: mount what holds `simple/`.
                root = local.parent if local.name == "simple" else local
                args += ["-v", f"{root}:{root}:ro"]
    pip_conf = WORK / "pip.conf"
    with pip_conf.open("w") as f:
        config.write(f)
    return [*args, "-v", f"{pip_conf}:/etc/pip.conf:ro"]


def build(timings: dict[str, float], *, no_cache: bool) -> None:
    cmd = [
        "podman",
        *RUN,
        "build",
        *(["--no-cache"] if no_cache else []),
        "--pull=never",
        "-f",
        "docker/ray.Dockerfile",
        "--ignorefile",
        "docker/ray.Dockerfile.dockerignore",
        "--build-arg",
        f"BASE={BASE_IMAGE}",
        "--build-arg",
        f"DEBIAN_IMAGE={BASE_IMAGE}",
        *build_mounts(),
        "-t",
        IMAGE,
        ".",
    ]
    with timed(timings, "build_s"):
        sh(cmd, cwd=REPO, timeout=3600)


def run_locked(args: list[str], *, network: str = "none", timeout: float = 900) -> str:
    return sh(
        ["podman", *RUN, "run", "--rm", f"--network={network}", *LOCKED, IMAGE, *args],
        timeout=timeout,
    )


def check_single_container(timings: dict[str, float]) -> dict[str, Any]:
    user = run_locked(["id", "-u"]).strip()
    if user == "0":
        raise CheckError("the image runs as root; the Dockerfile's last USER must be 1000:100")
    with timed(timings, "help_s"):
        helped = run_locked(["cpsweep", "--help"])
    if "usage: cpsweep" not in helped:
        raise CheckError(f"cpsweep --help printed no usage:\n{helped[-2000:]}")
    with timed(timings, "train_1_epoch_s"):
        out = run_locked(
            [
                "sh",
                "-c",
                "cpsweep train search_spaces/quickstart.yaml --set epochs=1 "
                "--set criterion.name=never --output-dir /tmp/train >&2 "
                "&& cat /tmp/train/summary.json",
            ]
        )
    summary = json.loads(out)
    if summary.get("epochs") != 1:
        raise CheckError(f"cpsweep train wrote an unexpected summary: {summary}")
    return {"uid": int(user), "train_summary": summary}


def _wait_for_nodes(head: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(
            ["podman", "exec", head, "ray", "status"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
        status = proc.stdout
        active = status.split("Active:", 1)[-1].split("Pending:", 1)[0]
        if active.count("node_") >= count:
            return
        time.sleep(3)
    raise CheckError(f"{count} Ray nodes did not join within {timeout:.0f} s:\n{status}")


def check_cluster(timings: dict[str, float]) -> dict[str, Any]:
    """Head + worker + a submitter container, as the RayCluster and RayJob run them."""
    tag = f"cpsweep-check-{os.getpid()}"
    net, head, worker = f"{tag}-net", f"{tag}-head", f"{tag}-worker"
    secret_dir = WORK / tag
    secret_dir.mkdir(mode=0o700, parents=True)
    token_file = secret_dir / "auth_token"
    token = secrets.token_hex(32)
    token_file.write_text(token)
    token_file.chmod(0o444)  # the containers' user reads it; the 0700 dir keeps others out
    # Stands in for the ReadWriteMany PersistentVolumeClaim: the head's drivers pick the
    # sweep's directory and the worker's trials write checkpoints into it.
    results = secret_dir / "results"
    results.mkdir()
    os.chown(results, 1000, 100)
    env = {**os.environ, "RAY_AUTH_TOKEN": token}  # -e NAME passes it without a command line
    ray_env = ["-e", "RAY_AUTH_MODE=token", "-e", "RAY_AUTH_TOKEN"]
    # Restarted on failure as the kubelet restarts a pod: on a loaded host a raylet can
    # miss Ray's fixed 30 s registration wait ("timed out during startup").
    node = ["podman", *RUN, "run", "-d", "--restart=on-failure:3", f"--network={net}", *LOCKED]
    node += ["--shm-size=1g", *ray_env, "-v", f"{results}:/var/lib/cpsweep/results"]
    started: list[str] = []
    try:
        sh(["podman", "network", "create", "--internal", net])
        with timed(timings, "cluster_up_s"):
            sh(
                [
                    *node,
                    "--name",
                    head,
                    "-e",
                    "CPSWEEP_RESULTS_DIR=/var/lib/cpsweep/results",
                    IMAGE,
                    "ray",
                    "start",
                    "--head",
                    "--block",
                    "--port=6379",
                    "--dashboard-host=0.0.0.0",
                    "--num-cpus=0",
                    '--resources={"trial_driver": 4}',
                    "--disable-usage-stats",
                ],
                env=env,
            )
            started.append(head)
            sh(
                [
                    *node,
                    "--name",
                    worker,
                    IMAGE,
                    "ray",
                    "start",
                    f"--address={head}:6379",
                    "--block",
                    "--num-cpus=2",
                    "--disable-usage-stats",
                ],
                env=env,
            )
            started.append(worker)
            _wait_for_nodes(head, 2, timeout=300)
        submit = [
            "podman",
            *RUN,
            "run",
            "--rm",
            f"--network={net}",
            *LOCKED,
            "-e",
            "RAY_AUTH_MODE=token",
            "-e",
            "RAY_AUTH_TOKEN_PATH=/var/run/secrets/ray/auth_token",
            "-v",
            f"{token_file}:/var/run/secrets/ray/auth_token:ro",
            IMAGE,
            "cpsweep",
            "submit",
            "search_spaces/quickstart.yaml",
            f"--address=http://{head}:8265",
        ]
        with timed(timings, "quickstart_sweep_s"):
            out = sh(submit, timeout=1800)
        summaries = list(results.glob("*/summary.json"))
        if len(summaries) != 1:
            raise CheckError(f"expected one summary.json under {results}, found {summaries}")
        summary = json.loads(summaries[0].read_text())
        trials = summary.get("trials", [])
        if len(trials) != 4 or summary.get("interrupted") or any(t["error"] for t in trials):
            raise CheckError(f"the quickstart sweep did not finish its 4 trials: {summary}")
        restarts = {
            name: int(sh(["podman", "inspect", "--format", "{{.RestartCount}}", name]).strip())
            for name in started
        }
        return {"submit_tail": out[-1500:], "summary": summary, "restarts": restarts}
    except CheckError:
        for name in started:
            log.error("%s log:\n%s", name, container_log(name))
        raise
    finally:
        for name in reversed(started):  # only what this run started, by name
            sh(["podman", "rm", "-f", "-t", "5", name], check=False)
        sh(["podman", "network", "rm", "-f", net], check=False)
        shutil.rmtree(secret_dir, ignore_errors=True)


def image_size() -> int:
    return int(sh(["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE]).strip())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-build", action="store_true", help="use the image built before")
    p.add_argument("--no-cache", action="store_true", help="build every layer again (cold)")
    p.add_argument("--no-cluster", action="store_true", help="skip the head + worker run")
    p.add_argument("--out", type=Path, default=RESULTS / "image_check.json")
    args = p.parse_args()
    setup_logging()
    timings: dict[str, float] = {}
    record: dict[str, Any] = {"command": command_line(), "started": now_iso()}
    try:
        preflight()
        WORK.mkdir(parents=True, exist_ok=True)
        record["containers_conf"] = ensure_containers_conf()
        ensure_base_image(timings)
        if not args.no_build:
            build(timings, no_cache=args.no_cache)
        record["image_bytes"] = image_size()
        record["single"] = check_single_container(timings)
        if not args.no_cluster:
            record["cluster"] = check_cluster(timings)
    except CheckError as e:
        log.error("%s", e)
        record["error"] = str(e)
        return 1
    finally:
        record["timings_s"] = timings
        record["loadavg_end"] = list(os.getloadavg())
        write_json(args.out, record)
        log.info("wrote %s", args.out)
    log.info("image %s: %.2f GB; %s", IMAGE, record["image_bytes"] / 1e9, timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

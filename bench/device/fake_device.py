"""A Python environment that holds only what the GPU machine has, for the CPU rehearsal.

Run with the project's .venv python: it makes a venv at DEST with the base Python of
that version (pyenv's, by default) and a .pth file pointing at a folder of symlinks
to the .venv's copies of the GPU machine's packages (torch, torchvision, numpy,
pandas, pyarrow, scikit-learn, aiohttp, grpcio) and of everything they require,
dist-info folders included. Nothing is installed or copied; nothing from the
project's own requirements that the GPU machine lacks (ray, pydantic, mlflow, ...)
is visible.

    .venv/bin/python bench/device/fake_device.py /tmp/devenv [--python /root/.pyenv/versions/3.11.7/bin/python]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement

DEVICE = ["torch", "torchvision", "numpy", "pandas", "pyarrow", "scikit-learn", "aiohttp", "grpcio"]
ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "extra": "",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str]) -> list[md.Distribution]:
    """The roots and everything they require (no extras), as installed here. The markers
    are evaluated for the GPU machine's Python 3.12 (torch needs setuptools there)."""
    seen: dict[str, md.Distribution] = {}
    stack = list(roots)
    while stack:
        name = norm(stack.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            print(f"  (not installed here: {name})")
            continue
        seen[name] = dist
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate(ENV):
                stack.append(req.name)
    return list(seen.values())


def top_level(dist: md.Distribution) -> set[str]:
    """The entries directly under site-packages that belong to `dist`."""
    out = set()
    for f in dist.files or []:
        parts = Path(f).parts
        if parts and parts[0] not in ("..", "__pycache__") and not parts[0].endswith(".pth"):
            out.add(parts[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest")
    ap.add_argument(
        "--python", default=f"/root/.pyenv/versions/{sys.version.split()[0]}/bin/python"
    )
    args = ap.parse_args()
    dest = Path(args.dest)
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run([args.python, "-m", "venv", str(dest)], check=True)
    site = Path(sysconfig.get_paths()["purelib"])  # the .venv's site-packages
    links = dest / "device-packages"
    links.mkdir()
    dists = closure(DEVICE)
    for dist in sorted(dists, key=lambda d: norm(d.metadata["Name"])):
        for entry in sorted(top_level(dist)):
            src = site / entry
            if src.exists() and not (links / entry).exists():
                (links / entry).symlink_to(src)
    (venv_site,) = dest.glob("lib/python*/site-packages")
    (venv_site / "device_packages.pth").write_text(str(links) + "\n")
    names = ", ".join(
        f"{d.metadata['Name']} {d.version}"
        for d in sorted(dists, key=lambda d: norm(d.metadata["Name"]))
    )
    print(f"fake device at {dest}: {len(dists)} distributions visible: {names}")


if __name__ == "__main__":
    main()

"""Build `.whl/`: what the GPU machine needs to run bench/gpu.py, carried in one `run`.

    bash bench/device/pack.sh                      # cp312 wheels -> .whl/ (the device)
    bash bench/device/pack.sh --python-version 3.11 --dest /tmp/whl311   # CPU rehearsal

1. downloads (pip, no deps, binary only, manylinux x86_64) the pins of
   bench/device/wheels.txt for that Python;
2. repacks ray smaller: drops ray/jars, ray/rllib, ray/llm, ray/serve and the
   dashboard's source maps (keeps ray/dashboard/client/build: the local cluster
   starts the dashboard), strips the symbol tables of its ELF files (`strip
   --strip-unneeded`; `--no-strip` keeps them) and writes a new RECORD;
3. adds Fashion-MNIST from /usr/share/datasets/fashion-mnist into `fashion-mnist/`:
   all of it when it fits under --target-mib, else the full test split and the
   first N training images (N as large as fits, a multiple of 1,000, at least
   --min-train; fewer: no data, and bench/gpu.py falls back to digits). What was
   packed is written to fashion-mnist/PACKED.txt;
4. prints the sizes and fails when the folder is over --limit-mib (the `run`
   tool carries 64 MiB, the tracked files take ~4).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# trainables/data/datasets.py DEFAULT_ROOTS["fashion-mnist"] (not imported: this runs on a python3
# without torch); gpu_check.sh copies the pack back to the same place on the device.
FMNIST = Path("/usr/share/datasets/fashion-mnist")
MIB = 2**20
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
RAY_DROP = ("ray/jars/", "ray/rllib/", "ray/llm/", "ray/serve/")


def pins() -> list[str]:
    lines = (HERE / "wheels.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def download(dest: Path, python_version: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *[a for p in PLATFORMS for a in ("--platform", p)],
        "-d",
        str(dest),
        *pins(),
    ]
    print("+", " ".join(cmd[:12]), "...", len(pins()), "pins", flush=True)
    subprocess.run(cmd, check=True)
    got = sorted(p.name for p in dest.glob("*.whl"))
    if len(got) != len(pins()):
        sys.exit(f"pack: expected {len(pins())} wheels, got {len(got)}: {got}")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def _strip(data: bytes, name: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "in"), Path(tmp, "out")
        src.write_bytes(data)
        r = subprocess.run(
            ["strip", "--strip-unneeded", "-o", str(out), str(src)], capture_output=True, text=True
        )
        if r.returncode != 0:
            print(f"  strip failed on {name} ({r.stderr.strip()}); kept as is")
            return data
        return out.read_bytes()


def repack_ray(wheel: Path, strip: bool) -> None:
    """Rewrite the ray wheel in place without RAY_DROP, with a RECORD pip accepts."""
    strip = strip and shutil.which("strip") is not None
    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".tmp")
    record_name = None
    rows: list[str] = []
    dropped = stripped = 0
    with (
        zipfile.ZipFile(wheel) as zin,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout,
    ):
        for info in zin.infolist():
            name = info.filename
            if name.endswith(".dist-info/RECORD"):
                record_name = name
                continue
            if name.startswith(RAY_DROP) or (
                name.startswith("ray/dashboard/client/build/") and name.endswith(".map")
            ):
                dropped += 1
                continue
            if info.is_dir():
                continue
            data = zin.read(info)
            if strip and _is_elf(data):
                new = _strip(data, name)
                stripped += len(data) - len(new)
                data = new
            out = zipfile.ZipInfo(name, date_time=info.date_time)
            out.external_attr = info.external_attr  # keeps the exec bits of gcs_server etc.
            out.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(out, data, compresslevel=9)
            rows.append(f"{name},{_record_hash(data)},{len(data)}")
        assert record_name is not None, "ray wheel without RECORD"
        rows.append(f"{record_name},,")
        rec = zipfile.ZipInfo(record_name, date_time=(2026, 1, 1, 0, 0, 0))
        rec.external_attr = 0o100644 << 16
        zout.writestr(rec, "\n".join(rows) + "\n", compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(wheel)
    print(
        f"  ray repacked: {before / MIB:.1f} -> {wheel.stat().st_size / MIB:.1f} MiB "
        f"({dropped} entries dropped, {stripped / MIB:.1f} MiB of ELF symbols stripped)"
    )


def _idx_head(path: Path, keep: int) -> bytes:
    """The idx file at `path` (gzip) cut to its first `keep` items, gzip -9."""
    raw = gzip.decompress(path.read_bytes())
    magic, n = struct.unpack(">II", raw[:8])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, raw[4 : 4 + 4 * dims])
    item = 1
    for d in shape[1:]:
        item *= d
    head = 4 + 4 * dims
    keep = min(keep, n)
    out = struct.pack(">II", magic, keep) + raw[8:head] + raw[head : head + keep * item]
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(out)
    return buf.getvalue()


def add_fashion_mnist(dest: Path, room: int, min_train: int) -> str:
    """Fashion-MNIST into dest/fashion-mnist within `room` bytes; a line saying what."""
    names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    if not all((FMNIST / n).is_file() for n in names):
        return f"no Fashion-MNIST: {FMNIST} lacks its files (gpu.py uses digits)"
    out = dest / "fashion-mnist"
    full = sum((FMNIST / n).stat().st_size for n in names)
    if full <= room:
        out.mkdir()
        for n in names:
            shutil.copy2(FMNIST / n, out / n)
        what = "Fashion-MNIST, all of it (60,000 train, 10,000 test)"
    else:
        test = sum((FMNIST / n).stat().st_size for n in names[2:])
        per_image = (FMNIST / names[0]).stat().st_size / 60000 * 1.02  # gzip -9 of a head
        keep = int((room - test - 64 * 1024) / per_image) // 1000 * 1000
        keep = min(keep, 60000)
        if keep < min_train:
            return (
                f"no Fashion-MNIST: {full / MIB:.1f} MiB does not fit in the "
                f"{room / MIB:.1f} MiB left, nor {min_train} training images "
                "with the test split (gpu.py uses digits)"
            )
        out.mkdir()
        for n in names[2:]:
            shutil.copy2(FMNIST / n, out / n)
        for n in names[:2]:
            (out / n).write_bytes(_idx_head(FMNIST / n, keep))
        what = (
            f"Fashion-MNIST: the first {keep:,} of the 60,000 training images (the full "
            f"set, {full / MIB:.1f} MiB, does not fit) and all 10,000 test images"
        )
    (out / "PACKED.txt").write_text(what + "\n")
    return what


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python-version", default="3.12", help="wheels for this Python (3.12)")
    ap.add_argument("--dest", default=str(REPO / ".whl"), help="output folder (.whl)")
    ap.add_argument("--no-strip", action="store_true", help="keep ray's ELF symbol tables")
    ap.add_argument("--no-data", action="store_true", help="leave Fashion-MNIST out")
    ap.add_argument("--target-mib", type=float, default=58.0, help="data fills up to this")
    ap.add_argument("--limit-mib", type=float, default=60.0, help="fail above this")
    ap.add_argument(
        "--min-train",
        type=int,
        default=15000,
        help="fewer Fashion-MNIST training images fit: pack no data",
    )
    args = ap.parse_args()

    dest = Path(args.dest).resolve()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    download(dest, args.python_version)
    (ray_whl,) = dest.glob("ray-*.whl")
    repack_ray(ray_whl, strip=not args.no_strip)
    wheels = sum(p.stat().st_size for p in dest.glob("*.whl"))
    if args.no_data:
        data = "no Fashion-MNIST (--no-data; gpu.py uses digits)"
    else:
        data = add_fashion_mnist(dest, int(args.target_mib * MIB) - wheels, args.min_train)
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    for p in sorted(dest.glob("*.whl"), key=lambda p: -p.stat().st_size)[:6]:
        print(f"  {p.stat().st_size / MIB:6.2f} MiB  {p.name}")
    print(f"pack: {len(list(dest.glob('*.whl')))} wheels, {wheels / MIB:.1f} MiB; {data}")
    print(f"pack: total {total / MIB:.1f} MiB in {dest} (python {args.python_version})")
    if total > args.limit_mib * MIB:
        sys.exit(f"pack: FAILED: {total / MIB:.1f} MiB is over the {args.limit_mib} MiB limit")


if __name__ == "__main__":
    os.umask(0o022)
    main()

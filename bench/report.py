"""Render the benchmark JSON files as the markdown tables used in BENCHMARKS.md.

.venv/bin/python bench/report.py [--quick]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import RESULTS


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _pm(d: dict[str, Any], scale: float = 1.0, spec: str = ".1f") -> str:
    if d.get("mean") is None:
        return "-"
    std_spec = spec.lstrip("+")
    return f"{format(d['mean'] * scale, spec)} ± {format((d.get('std') or 0) * scale, std_spec)}"


def paper_repro_tables(data: dict[str, Any]) -> str:
    lines = [
        f"Command: `{data['command']}`; {data['date']} to {data['finished']}; sweep wall "
        f"{data['sweep_wall_s']:.0f} s; seeds {data['seeds']}; relative ratio "
        f"{data['relative']['ratio']}, patience {data['relative']['patience']}.",
        "",
        "| arm | period ends (per seed) | test acc % | Δacc vs repeats3 (pts, paired) "
        "| wall s | train s | eval s | samples | energy Wh | CO2 g | cost m$ |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in data["per_arm"].items():
        d3 = a.get("acc_delta_vs_repeats3_pts", {})
        lines.append(
            f"| {arm} | {a['cp_end_epochs']} | {_pm(a['final_val_acc'], 100, '.2f')} "
            f"| {_pm(d3, 1, '+.2f') if arm != 'repeats3' else '-'} "
            f"| {_pm(a['wall_s'])} | {_pm(a['train_s'])} | {_pm(a['eval_s'])} "
            f"| {a['samples']['mean']:,.0f} | {_pm(a['energy_kwh'], 1000, '.2f')} "
            f"| {_pm(a['co2_kg'], 1000, '.2f')} | {_pm(a['cost_usd'], 1000, '.3f')} |"
        )
    lines += [
        "",
        "Reductions (percent of the reference arm's mean; positive = cheaper):",
        "",
        "| arm | vs repeats3: wall | train | samples | energy | CO2 | cost "
        "| vs repeats1: wall | samples | energy | cost | Δacc vs repeats1 (pts, paired) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in data["per_arm"].items():
        r3 = a.get("reduction_vs_repeats3_pct", {})
        r1 = a.get("reduction_vs_repeats1_pct", {})
        d1 = a.get("acc_delta_vs_repeats1_pts", {})
        lines.append(
            f"| {arm} | {_f(r3.get('wall_s'), '.1f')} | {_f(r3.get('train_s'), '.1f')} "
            f"| {_f(r3.get('samples'), '.1f')} | {_f(r3.get('energy_kwh'), '.1f')} "
            f"| {_f(r3.get('co2_kg'), '.1f')} | {_f(r3.get('cost_usd'), '.1f')} "
            f"| {_f(r1.get('wall_s'), '.1f')} | {_f(r1.get('samples'), '.1f')} "
            f"| {_f(r1.get('energy_kwh'), '.1f')} | {_f(r1.get('cost_usd'), '.1f')} "
            f"| {_pm(d1, 1, '+.2f') if arm != 'repeats1' else '-'} |"
        )
    return "\n".join(lines)


def oracle_table(data: dict[str, Any]) -> str:
    lines = [
        f"Command: `{data['command']}`; {data['date']}; sweep wall {data['sweep_wall_s']:.0f} s; "
        f"seeds {data['seeds']}; merged paper_repro: {data['paper_repro_merged']}.",
        "",
        "| switch after epoch k | n | test acc % | samples |",
        "|---|---|---|---|",
    ]
    for p in data["points"]:
        lines.append(
            f"| {p['switch_after']} | {p['n']} | {100 * p['acc_mean']:.2f} ± "
            f"{100 * (p['acc_std'] or 0):.2f} | {p['samples']:,.0f} |"
        )
    if data.get("criterion_ends"):
        lines += ["", "Criterion ends: `" + json.dumps(data["criterion_ends"]) + "`"]
    return "\n".join(lines)


def overheads_tables(data: dict[str, Any]) -> str:
    out = [f"Command: `{data['command']}`; {data['date']}."]
    if "rotation" in data:
        out += [
            "",
            "| setup | layers | samples/epoch | epoch s | rotation s (in epoch) "
            "| rotation s (median call) | ratio in epoch | ratio (median call) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for k, v in data["rotation"].items():
            if isinstance(v, dict) and "epoch_s" in v:
                out.append(
                    f"| {k} | {v['layers']} | {v['samples_per_epoch']:,} | {v['epoch_s']:.2f} "
                    f"| {v['rotation_s_in_epoch'] * 1e3:.2f} ms "
                    f"| {v['rotation_compute_median_s'] * 1e3:.3f} ms "
                    f"| {100 * v['ratio_in_epoch']:.4f}% | {100 * v['ratio_median_compute']:.4f}% |"
                )
    if "scheduler" in data:
        out += [
            "",
            "| scheduler variant | trials | results/s | on_trial_add/s |",
            "|---|---|---|---|",
        ]
        for k, v in data["scheduler"].items():
            if isinstance(v, dict) and "results_per_s" in v:
                out.append(
                    f"| {k} | {v.get('trials', data['scheduler']['trials'])} "
                    f"| {v['results_per_s']:,.0f} | {v['on_trial_add_per_s']:,.0f} |"
                )
    if "augment" in data:
        out += [
            "",
            "| input, batch | batched ms/batch | per-sample v2 ms/batch | speed-up |",
            "|---|---|---|---|",
        ]
        for k, v in data["augment"].items():
            if isinstance(v, dict) and "speedup" in v:
                out.append(
                    f"| {k} | {v['batched_s_per_batch'] * 1e3:.2f} "
                    f"| {v['per_sample_s_per_batch'] * 1e3:.2f} | {v['speedup']:.1f}x |"
                )
    if "ray" in data:
        r = data["ray"]
        out += [
            "",
            "| quickstart | wall s | trial start-up s (mean) | per-epoch report latency s "
            "(mean / median) | overhead vs plain |",
            "|---|---|---|---|---|",
            f"| plain loop (train_local, 2 processes) | {r['plain_loop']['wall_s']:.1f} | - | - | - |",
        ]
        variants = ("ray_as_shipped", "ray_train_pool", "ray_train_torchtrainer")
        for k in (*variants, "ray_train_executor", "ray_no_mlflow_no_energy"):
            if k not in r:  # older result files
                continue
            v = r[k]
            out.append(
                f"| {k} | {v['wall_s']:.1f} | {_f(v['trial_startup_s_mean'], '.2f')} "
                f"| {_f(v['per_epoch_report_latency_s_mean'], '.3f')} / "
                f"{_f(v['per_epoch_report_latency_s_median'], '.3f')} "
                f"| {v['overhead_vs_plain_pct']:+.0f}% (with Ray start-up "
                f"{r['ray_start_s']:.1f} s: {v['overhead_incl_ray_start_pct']:+.0f}%) |"
            )
    if "handshake" in data:
        h = data["handshake"]
        out += [
            "",
            "| mode | executor | cp/handshake_s mean (max) | per-epoch latency s mean "
            "| sweep wall s |",
            "|---|---|---|---|---|",
        ]
        for mode in ("push", "sync", "push_train", "sync_train"):
            if mode not in h:  # older result files
                continue
            v = h[mode]
            out.append(
                f"| {mode.split('_')[0]} | {v.get('executor', 'train')} "
                f"| {_f(v['handshake_s_mean'], '.4f')} ({_f(v['handshake_s_max'], '.4f')}) "
                f"| {_f(v['per_epoch_report_latency_s_mean'], '.3f')} | {v['wall_s']:.1f} |"
            )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="render the *_quick.json files")
    args = ap.parse_args()
    sfx = "_quick" if args.quick else ""
    for stem, render in (
        ("paper_repro", paper_repro_tables),
        ("oracle", oracle_table),
        ("overheads", overheads_tables),
    ):
        path = Path(RESULTS) / f"{stem}{sfx}.json"
        if path.is_file():
            print(f"## {path.name}\n\n{render(json.loads(path.read_text()))}\n")


if __name__ == "__main__":
    main()

"""``fastawq report OUT_DIR``: a picture of how quantization went, layer by layer.

Reads ``fastawq_record.json`` (written next to every checkpoint) and draws, per decoder layer:
the output error of each scaling group before (round-to-nearest) and after AWQ, the α chosen for
each group, the clipping ratios, and the time spent. Writes ``report.png`` and ``report.html`` (the
picture plus a table, worst layers first) into the folder. Needs matplotlib (``fastawq[report]``).
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from fastawq.errors import FastAWQError

RECORD_FILE = "fastawq_record.json"


def _group_label(group: dict[str, Any]) -> str:
    """A short name for a scaling group: the linears it scales, without the block prefix."""
    names = [str(n).split(".")[-1] for n in group.get("linears", [])] or [str(group.get("prev", "?"))]
    return "+".join(names)


def load_record(out_dir: Path) -> dict[str, Any]:
    f = out_dir / RECORD_FILE
    if not f.is_file():
        raise FastAWQError(
            f"{out_dir} has no {RECORD_FILE}",
            hint="report reads the record fastawq writes next to a checkpoint it quantized",
        )
    record: dict[str, Any] = json.loads(f.read_text())
    if not record.get("layers"):
        raise FastAWQError(f"{f} records no layers", hint="the quantization did not finish")
    return record


def layer_table(record: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for layer in record["layers"]:
        groups = layer.get("groups", [])
        rtn = sum(float(g.get("loss_rtn", 0.0)) for g in groups)
        awq = sum(float(g.get("loss_awq", 0.0)) for g in groups)
        clips = [v["clip_mean"] for v in layer.get("linears", {}).values() if "clip_mean" in v]
        rows.append(
            {
                "layer": int(layer["index"]),
                "loss_rtn": rtn,
                "loss_awq": awq,
                "gain": rtn / awq if awq > 0 else float("inf"),
                "alphas": {_group_label(g): float(g.get("alpha", float("nan"))) for g in groups},
                "clip_mean": sum(clips) / len(clips) if clips else None,
                "seconds": float(layer.get("seconds", 0.0)),
            }
        )
    return rows


def draw(record: dict[str, Any], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    layers = record["layers"]
    idx = [int(layer["index"]) for layer in layers]
    fig, axes = plt.subplots(4, 1, figsize=(12, 13), sharex=True, constrained_layout=True)

    ax = axes[0]
    per_group_rtn: dict[str, list[float]] = defaultdict(list)
    per_group_awq: dict[str, list[float]] = defaultdict(list)
    for layer in layers:
        for g in layer.get("groups", []):
            per_group_rtn[_group_label(g)].append(float(g.get("loss_rtn", float("nan"))))
            per_group_awq[_group_label(g)].append(float(g.get("loss_awq", float("nan"))))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(per_group_rtn):
        c = colors[i % len(colors)]
        xs = idx[: len(per_group_rtn[name])]
        ax.plot(xs, per_group_rtn[name], linestyle="--", color=c, alpha=0.6, label=f"{name} RTN")
        ax.plot(xs, per_group_awq[name], marker="o", markersize=3, color=c, label=f"{name} AWQ")
    ax.set_yscale("log")
    ax.set_ylabel("output MSE of the group\n(dashed: RTN, solid: AWQ)")
    ax.legend(ncol=4, fontsize=8)
    ax.set_title("Quantization error per scaling group (lower is better)")

    ax = axes[1]
    for i, name in enumerate(per_group_rtn):
        alphas = [
            float(g.get("alpha", float("nan")))
            for layer in layers
            for g in layer.get("groups", [])
            if _group_label(g) == name
        ]
        ax.plot(idx[: len(alphas)], alphas, marker="o", markersize=3, color=colors[i % len(colors)], label=name)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("chosen α\n(scale = act^α / w^(1−α))")
    ax.legend(ncol=4, fontsize=8)
    ax.set_title("Scale exponent chosen by the grid search")

    ax = axes[2]
    clip_lines: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for layer in layers:
        for name, info in layer.get("linears", {}).items():
            if "clip_mean" in info:
                clip_lines[name.split(".")[-1]].append((int(layer["index"]), info["clip_mean"], info["clip_min"]))
    for i, (name, pts) in enumerate(sorted(clip_lines.items())):
        c = colors[i % len(colors)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, color=c, label=f"{name} mean")
        ax.plot([p[0] for p in pts], [p[2] for p in pts], linestyle=":", color=c, alpha=0.7)
    ax.set_ylabel("clip ratio (max kept / max)\n(dotted: smallest group)")
    if clip_lines:
        ax.legend(ncol=4, fontsize=8)
    else:
        ax.text(0.5, 0.5, "no clipping recorded", transform=ax.transAxes, ha="center")
    ax.set_title("Weight clipping")

    ax = axes[3]
    ax.bar(idx, [float(layer.get("seconds", 0.0)) for layer in layers], color=colors[0])
    ax.set_ylabel("seconds")
    ax.set_xlabel("decoder layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Time per layer")

    fig.suptitle(title, fontsize=12)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_report(out_dir: str | Path) -> tuple[Path, Path]:
    """Draw ``report.png`` and ``report.html`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    record = load_record(out)
    cfg = record.get("quantization_config", {})
    title = (
        f"{out.name}: w{cfg.get('bits', '?')} g{cfg.get('group_size', '?')}, "
        f"{len(record['layers'])} layers, {float(record.get('seconds', 0.0)):.0f} s, "
        f"{record.get('n_calib_tokens', '?')} calibration tokens"
    )
    png = out / "report.png"
    draw(record, png, title)
    rows = layer_table(record)
    worst = sorted(rows, key=lambda r: r["loss_awq"], reverse=True)
    cells = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                r["layer"],
                f"{r['loss_rtn']:.3e}",
                f"{r['loss_awq']:.3e}",
                f"{r['gain']:.2f}×",
                ", ".join(f"{k} {a:.2f}" for k, a in r["alphas"].items()),
                "—" if r["clip_mean"] is None else f"{r['clip_mean']:.3f}",
                f"{r['seconds']:.2f}",
            )
        )
        + "</tr>"
        for r in worst
    )
    image = base64.b64encode(png.read_bytes()).decode()
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head>
<body><h1>{html.escape(title)}</h1>
<img src="data:image/png;base64,{image}" alt="per-layer quantization report" style="max-width:100%">
<h2>Layers, largest error after AWQ first</h2>
<table><tr><th>layer</th><th>error RTN</th><th>error AWQ</th><th>RTN / AWQ</th><th>α per group</th>
<th>mean clip</th><th>seconds</th></tr>
{cells}
</table></body></html>
"""
    page_path = out / "report.html"
    page_path.write_text(page)
    return png, page_path

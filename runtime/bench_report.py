"""The tables, the Markdown / JSON report and the plots of `groundrt bench` (runtime/bench.py).

Every table has the same columns for every row; a row that failed keeps its place, its status
cell says why and its other cells are '-'. The plots (accuracy against latency with the Pareto
front, per-stage bars, latency histograms) need matplotlib, the [bench] extra: without it the
report says so and the tables and JSON are written all the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from groundrt.runtime.bench import REPORT_STAGES
from groundrt.runtime.machine import format_machine
from groundrt.runtime.roofline import EDGE_DEVICES

DASH = "-"
PLOT_STAGES = ("preprocess", "image", "phrase", "affinity", "decode")


def _f(value: float | None, digits: int = 2) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _ok(row: dict) -> bool:
    return row["status"] == "ok"


def _status(row: dict) -> str:
    return "ok" if _ok(row) else f"failed: {row['error']}".replace("|", "/")


def _cells(report: dict, fill: Callable[[dict], list[str]], width: int) -> list[list[str]]:
    """One line per row: name, status, then `fill(row)` (or '-' x width for a failed row)."""
    return [[row["name"], _status(row)] + (fill(row) if _ok(row) else [DASH] * width)
            for row in report["rows"]]


def _scenario(row: dict, name: str, digits: int = 2) -> str:
    found = row["scenarios"].get(name)
    if found is None:
        error = row["scenarios"].get(f"{name}_error")
        return f"failed: {error}" if error else DASH
    return _f(found["value"], digits)


def summary_table(report: dict) -> str:
    header = ["variant", "status", "backend", "precision", "total p50 ms", "p90", "p95", "p99",
              "mean", "FPS", "x ref", "SingleStream p90 ms",
              "MultiStream p99 ms", "Offline FPS", "RSS added MiB", "GPU MiB", "package MiB",
              "AR overall"]

    def fill(row: dict) -> list[str]:
        total = row["stages"]["total"]
        ar = (row.get("accuracy") or {}).get("overall")
        return [row["backend"], row["precision"], *(_f(total[k]) for k in (
            "p50", "p90", "p95", "p99", "mean")), _f(row["fps"], 1), _f(row.get("x_first")),
            _scenario(row, "singlestream"), _scenario(row, "multistream"),
            _scenario(row, "offline", 1), _f(row["rss_added_mib"], 0),
            _f(row["gpu_memory_mib"], 0), _f(row["package_mib"]),
            _f(ar, 3) if ar is not None else row.get("accuracy_error", DASH)]

    return (_table(header, _cells(report, fill, len(header) - 2))
            + f"\n\nx ref: total p50 / that of {report['reference'] or 'the first row that ran'}."
            " RSS added: the resident memory loading the row's Grounder and one call added; "
            f"the process's peak RSS over the whole run, all rows loaded: "
            f"{_f(report.get('peak_rss_mib'), 0)} MiB.")


def stage_table(report: dict) -> str:
    header = ["variant", "status", *REPORT_STAGES]

    def fill(row: dict) -> list[str]:
        return [DASH if s is None else " / ".join(_f(s[k]) for k in (
            "p50", "p90", "p95", "p99", "mean")) for s in (row["stages"][n]
                                                          for n in REPORT_STAGES)]

    return _table(header, _cells(report, fill, len(REPORT_STAGES)))


def accuracy_table(report: dict) -> str:
    groups = ("overall", "things", "stuff", "singulars", "plurals", "narratives")
    header = ["variant", "status", *groups]

    def fill(row: dict) -> list[str]:
        found = row.get("accuracy")
        if found is None:
            return [row.get("accuracy_error", "not scored")] + [DASH] * (len(groups) - 1)
        return [_f(found.get(g), 3) if g != "narratives" else str(found.get(g))
                for g in groups]

    return _table(header, _cells(report, fill, len(groups)))


def roofline_table(report: dict) -> str:
    header = ["variant", "status", "stage", "work", "p50 ms", "achieved", "floor ms",
              "x floor"]
    lines = []
    for row in report["rows"]:
        roof = row.get("roofline") if _ok(row) else None
        if roof is None:
            why = row.get("roofline_error", "no roofline") if _ok(row) else DASH
            lines.append([row["name"], _status(row), why] + [DASH] * 5)
            continue
        for stage, s in roof["stages"].items():
            if "bytes" in s:
                work, achieved = f"{s['bytes'] / 1e6:.2f} MB", f"{s['achieved_gbs']:.1f} GB/s"
            else:
                work = f"{s['int8_gops']:.3f} INT8 + {s['fp32_gops']:.3f} FP32 GOP"
                achieved = f"{s['achieved_gops']:.1f} GOP/s"
            lines.append([row["name"], "ok", stage, work, _f(s["p50_ms"]), achieved,
                          _f(s["floor_ms"], 3), _f(s["x_floor"], 1)])
        total = row["stages"]["total"]["p50"]
        lines.append([row["name"], "ok", "frame (total)", f"{roof['frame_gops']:.3f} GOP",
                      _f(total), DASH, _f(roof["frame_floor_ms"], 3),
                      _f(total / roof["frame_floor_ms"], 1)])
    return _table(header, lines)


def edge_table(report: dict) -> str:
    header = ["variant", "status", "GOP / frame", "MB / frame",
              *(f"{d.name} (est.) ms" for d in EDGE_DEVICES)]

    def fill(row: dict) -> list[str]:
        roof = row.get("roofline")
        if roof is None:
            return [DASH] * (2 + len(EDGE_DEVICES))
        return [f"{roof['frame_gops']:.3f}", f"{roof['frame_bytes'] / 1e6:.2f}",
                *(_f(roof["edge_estimates_ms"][d.name], 3) for d in EDGE_DEVICES)]

    return _table(header, _cells(report, fill, 2 + len(EDGE_DEVICES)))


def peaks_line(report: dict) -> str:
    peaks = report.get("peaks")
    if peaks is None:
        return f"peaks: not measured ({report.get('peaks_error', 'roofline off')})"
    return (f"peaks on {peaks['threads']} threads (ONNX Runtime, {peaks['matmul_size']}^3, best "
            f"of {peaks['repeats']}): INT8 MatMulInteger {peaks['int8_gops']:.0f} GOP/s, "
            "FP32 MatMul "
            f"{peaks['fp32_gops']:.0f} GOP/s; copy {peaks['copy_gbs']:.1f} GB/s (read + write)")


def settings_line(report: dict) -> str:
    o = report["options"]
    return (f"{o['size'][0]}x{o['size'][1]} frames, a caption of {report.get('phrases')} "
            f"phrases (its text cached; 'text cold' encodes it anew), {o['threads']} ONNX "
            f"Runtime threads, {o['kernel_threads']} kernel threads, device {o['device']}; "
            f"SingleStream {o['runs']} runs after {o['warmup']} warm-up in {o['rounds']} "
            f"alternating blocks; MultiStream {o['streams']} streams; Offline batch "
            f"{o['batch']}")


def format_tables(report: dict) -> str:
    """The console report: settings, peaks, the summary, per-stage and roofline tables."""
    parts = [format_machine(report["machine"]), settings_line(report), peaks_line(report),
             summary_table(report),
             "per stage, ms: p50 / p90 / p95 / p99 / mean", stage_table(report)]
    if any(r.get("roofline") or r.get("roofline_error") for r in report["rows"]):
        parts += ["roofline (x floor = p50 / floor)", roofline_table(report)]
    if any(r.get("accuracy") or r.get("accuracy_error") for r in report["rows"]):
        parts += ["accuracy (AR)", accuracy_table(report)]
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------- plots


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, accuracy) no other point beats on both (lower latency
    and higher accuracy), by latency."""
    front = []
    for i, (latency, acc) in enumerate(points):
        if not any((lat2 <= latency and acc2 >= acc) and (lat2, acc2) != (latency, acc)
                   for lat2, acc2 in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def write_plots(report: dict, folder: Path) -> list[str]:
    """PNG plots into `folder` (their names); needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report["rows"] if _ok(r)]
    written = []

    fig, ax = plt.subplots(figsize=(8, 0.6 * len(ok) + 1.5))
    left = [0.0] * len(ok)
    for stage in PLOT_STAGES:
        values = [(r["stages"][stage] or {}).get("p50", 0.0) for r in ok]
        ax.barh([r["name"] for r in ok], values, left=left, label=stage)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("p50 ms per frame (SingleStream)")
    ax.legend(fontsize=8)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(folder / "stages.png", dpi=100)
    plt.close(fig)
    written.append("stages.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    for r in ok:
        ax.hist(r["totals_ms"], bins=40, alpha=0.5, label=r["name"])
    ax.set_xlabel("total ms per frame (SingleStream)")
    ax.set_ylabel("runs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "latency_histogram.png", dpi=100)
    plt.close(fig)
    written.append("latency_histogram.png")

    scored = [r for r in ok if (r.get("accuracy") or {}).get("overall") is not None]
    if scored:
        points = [(r["stages"]["total"]["p50"], r["accuracy"]["overall"]) for r in scored]
        front = pareto_front(points)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.scatter(*zip(*points, strict=True))
        for r, (x, y) in zip(scored, points, strict=True):
            ax.annotate(r["name"], (x, y), fontsize=7)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "r--",
                label="Pareto front")
        ax.set_xlabel("total p50 ms per frame")
        ax.set_ylabel("AR overall")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "accuracy_latency.png", dpi=100)
        plt.close(fig)
        written.append("accuracy_latency.png")
    return written


def to_markdown(report: dict, plots: list[str], plots_note: str | None = None,
                command: str | None = None) -> str:
    parts = ["# groundrt bench"]
    if command:
        parts.append(f"Regenerate: `{command}`")
    parts += ["## Machine", format_machine(report["machine"]).replace("\n", "  \n"),
              settings_line(report), peaks_line(report),
              "## Summary", summary_table(report),
              "## Per stage (ms: p50 / p90 / p95 / p99 / mean)", stage_table(report),
              "## Roofline (x floor = p50 / floor)",
              "Graph stages: counted Conv / MatMul / Gemm work (integer and Q/DQ nodes as INT8) "
              "at the measured peaks; kernel stages: bytes read + written at the measured copy "
              "bandwidth. Uncounted nodes (activations, softmax, adds) make these floors lower "
              "bounds. A stage under 1x ran faster than the one-node micro-benchmark that set "
              "the peak (ONNX Runtime's convolution kernels can beat its MatMul, and on a shared "
              "machine the peak may have been measured in a slow phase).",
              roofline_table(report),
              "## Edge estimates (estimates, not measurements)",
              "The frame's counted work at each device's dense INT8 peak or its bytes at its "
              "memory bandwidth, whichever is longer; no launch overheads or efficiency losses, "
              "so measured figures will be several times these. Kernel figures measured on a "
              "GPU (`bash benchmarks/gpu_checks.sh`) are in benchmarks/reports/kernels_gpu.md.",
              edge_table(report)]
    if any(r.get("accuracy") or r.get("accuracy_error") for r in report["rows"]):
        parts += ["## Accuracy (AR)", accuracy_table(report)]
    parts.append("## Plots")
    parts += [f"![{Path(name).stem}]({name})" for name in plots] or [plots_note or "none"]
    return "\n\n".join(parts) + "\n"


def write_report(report: dict, target: str | Path, command: str | None = None) -> Path:
    """The Markdown report, its JSON and its PNG plots (where matplotlib is installed):
    a folder gets report.md, report.json and the plots; a .md file is the report, with the
    JSON and plots in the folder of its name (RESULTS.md: RESULTS/)."""
    target = Path(target)
    markdown = target if target.suffix == ".md" else target / "report.md"
    assets = target.with_suffix("") if target.suffix == ".md" else target
    assets.mkdir(parents=True, exist_ok=True)
    try:
        plots, note = write_plots(report, assets), None
    except ModuleNotFoundError as exc:
        plots, note = [], f"no plots: {exc.name} is not installed (pip install 'groundrt[bench]')"
    write_json(report, assets / "report.json")
    prefix = "" if assets == markdown.parent else f"{assets.name}/"
    markdown.write_text(to_markdown(report, [prefix + name for name in plots], note, command))
    return markdown


def write_json(report: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=1, default=str))

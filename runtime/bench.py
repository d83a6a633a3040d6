"""`groundrt bench`: latency, throughput, memory, accuracy and the roofline of packages.

    groundrt bench                      # the shipped model, a sample scene at 640x480, 8 phrases
    groundrt bench --backend onnxruntime --precision int8-cpu --precision fp32 --runs 200 \
        --scenario multistream --scenario offline --baseline packages/old --report reports/b

Every variant asked for (each --backend x --precision of --model, then the baselines: --baseline
PKG, the numpy post-processing, --teacher RUN in PyTorch eager) becomes one row of the same
columns; one that cannot run is a row marked with its reason. The SingleStream runs (one frame
after another, the caption's text cached: encoded once before timing, as in a stream with a
fixed caption) are measured for all rows in alternating blocks (`measure_interleaved`), so
that a shared machine's changes of speed reach every row alike and their ratios hold; they
give the per-stage p50 / p90 / p95 / p99 / mean. MultiStream (a query = one frame of each of
8 streams, `Grounder.ground_batch`; its metric is the p99 of the query latency) and Offline
(all frames, in batches: frames per second) follow row by row, as MLPerf Inference defines
them (with far fewer queries than its minimums: the counts are in the report).
runtime/roofline.py gives each stage's floor on this machine; runtime/bench_report.py writes
the tables, the Markdown / JSON report and the plots.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from groundrt.runtime import roofline
from groundrt.runtime.grounder import Grounder

STAGES = ("preprocess", "image", "phrase", "affinity", "decode", "total")  # phrase: v2 only
DEFAULT_CAPTION = ("In this picture we can see two red circles, a blue star, three green "
                   "squares, a small yellow triangle, an orange ring, the sky, the grass and "
                   "the road.")
SAMPLES = Path(__file__).resolve().parent / "samples" / "png"


def sample_images(width: int = 640, height: int = 480, count: int | None = None
                  ) -> list[np.ndarray]:
    """The committed sample scenes (the first `count`), resized to width x height (BGR)."""
    from groundrt.data import PNGDataset

    samples = PNGDataset(SAMPLES, "val")
    return [cv2.resize(samples.read_image(image_id), (width, height),
                       interpolation=cv2.INTER_LINEAR)
            for image_id in sorted(samples.panoptic.images)[:count]]


def sample_image(width: int = 640, height: int = 480) -> np.ndarray:
    """The first committed sample scene, resized to width x height (BGR)."""
    return sample_images(width, height, 1)[0]


COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "white", "black")
SHAPES = ("circle", "square", "star", "triangle", "ring", "cross", "hexagon", "diamond")


def caption_with(phrases: int) -> str:
    """A caption of `phrases` noun phrases (1..64; 8: DEFAULT_CAPTION)."""
    if phrases == 8:
        return DEFAULT_CAPTION
    if not 1 <= phrases <= len(COLORS) * len(SHAPES):
        raise ValueError(f"--phrases must be 1..{len(COLORS) * len(SHAPES)}, not {phrases}")
    names = [f"{'an' if color[0] in 'aeiou' else 'a'} {color} {shape}"
             for shape in SHAPES for color in COLORS][:phrases]
    listed = names[0] if phrases == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"In this picture we can see {listed}."


def measure(grounder: Grounder, image: np.ndarray, caption: str = DEFAULT_CAPTION,
            runs: int = 100, warmup: int = 5) -> dict[str, list[float]]:
    """Sorted per-stage times (ms) of `runs` calls of grounder.ground(image, caption)."""
    return measure_interleaved({"": grounder}, image, caption, runs, warmup)[""]


def measure_interleaved(grounders: dict[str, Grounder], image: np.ndarray,
                        caption: str = DEFAULT_CAPTION, runs: int = 100, warmup: int = 5,
                        rounds: int = 1) -> dict[str, dict[str, list[float]]]:
    """`measure` for several grounders, in `rounds` alternating blocks of runs / rounds calls
    each, so that all of them see the same phases of a shared machine's speed."""
    times = {name: {stage: [] for stage in STAGES} for name in grounders}
    for grounder in grounders.values():
        grounder.encode_text(caption)
        for _ in range(warmup):
            grounder.ground(image, caption)
    for block in range(rounds):
        for name, grounder in grounders.items():
            for _ in range(runs // rounds + (block < runs % rounds)):
                result = grounder.ground(image, caption)
                for stage, value in result.timings_ms.items():  # text: the cached caption's
                    times[name].setdefault(stage, []).append(value)
    return {name: {stage: sorted(v) for stage, v in stages.items()}
            for name, stages in times.items()}


def percentile(sorted_values: list[float], q: float) -> float:
    return float(np.percentile(sorted_values, q * 100)) if sorted_values else float("nan")


def table_row(name: str, times: dict[str, list[float]]) -> str:
    """A markdown row: median / p90 / p99 of each stage."""
    cells = [f"{percentile(t, 0.5):.2f} / {percentile(t, 0.9):.2f} / {percentile(t, 0.99):.2f}"
             if t else "-" for t in (times.get(stage) for stage in STAGES)]
    return f"| {name} | " + " | ".join(cells) + " |"


def table_header() -> str:
    return "| variant | " + " | ".join(STAGES) + " |\n|---|" + "---|" * len(STAGES)


# ------------------------------------------------------------------- groundrt bench

REPORT_STAGES = ("preprocess", "image", "text cold", "text cached", "phrase", "affinity",
                 "decode", "total")
SCENARIOS = ("singlestream", "multistream", "offline")


def stats(values: list[float]) -> dict[str, float] | None:
    """p50 / p90 / p95 / p99 / mean of a stage's times (None: never measured)."""
    if not values:
        return None
    ordered = sorted(values)
    return {"p50": percentile(ordered, 0.5), "p90": percentile(ordered, 0.9),
            "p95": percentile(ordered, 0.95), "p99": percentile(ordered, 0.99),
            "mean": float(np.mean(ordered)), "n": len(ordered)}


@dataclass(frozen=True)
class Variant:
    """One row: a package (or run folder) on a backend at a precision."""

    name: str
    model: str | None
    backend: str = "auto"
    precision: str | None = None
    native_kernels: bool | None = None
    role: str = "variant"  # or "baseline"


@dataclass
class BenchOptions:
    model: str | None = None
    backends: list[str] = field(default_factory=lambda: ["auto"])
    precisions: list[str | None] = field(default_factory=lambda: [None])
    device: str = "cpu"
    ort_provider: str | None = None
    scenarios: list[str] = field(default_factory=lambda: ["singlestream"])
    size: tuple[int, int] = (640, 480)  # width, height
    phrases: int = 8
    caption: str | None = None
    image: str | None = None
    threads: int = 2
    kernel_threads: int = 2
    runs: int = 100
    warmup: int = 5
    rounds: int = 5
    streams: int = 8
    batch: int = 8
    baseline: str | None = None
    teacher: str | None = None
    numpy_baseline: bool = True
    data: str | None = None
    split: str = "val"
    eval_limit: int = 100
    roofline: bool = True


def variants(options: BenchOptions) -> list[Variant]:
    """The rows asked for: each backend x precision of the model, then the baselines."""
    name = Path(options.model).name if options.model else "default"
    rows = [Variant(f"{name} {backend} {precision or 'default precision'}", options.model,
                    backend, precision)
            for backend in options.backends for precision in options.precisions]
    first = rows[0]
    if options.baseline:
        rows.append(Variant(f"baseline {Path(options.baseline).name}", options.baseline,
                            first.backend, first.precision, role="baseline"))
    if options.numpy_baseline:
        rows.append(Variant(f"{name}, numpy post-processing", options.model, first.backend,
                            first.precision, native_kernels=False, role="baseline"))
    if options.teacher:
        rows.append(Variant(f"{Path(options.teacher).name} (teacher), PyTorch eager",
                            options.teacher, "torch", role="baseline"))
    return rows


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _status_mib(field: str) -> float | None:
    try:
        found = re.search(rf"{field}:\s*(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


def rss_mib() -> float:
    """The process's resident memory now, MiB (0 where /proc is not there)."""
    return _status_mib("VmRSS") or 0.0


def peak_rss_mib() -> float | None:
    """The process's peak resident memory (VmHWM), MiB."""
    peak = _status_mib("VmHWM")
    if peak is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak


def gpu_memory_mib() -> float | None:
    """This process's GPU memory as nvidia-smi reports it (None: no GPU or no nvidia-smi)."""
    import os

    from groundrt.runtime.machine import _run

    listing = _run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                    "--format=csv,noheader,nounits"])
    for line in (listing or "").splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return None


def folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def build_grounder(variant: Variant, options: BenchOptions) -> Grounder:
    return Grounder(variant.model, backend=variant.backend, precision=variant.precision,
                    threads=options.threads, kernel_threads=options.kernel_threads,
                    device=options.device if variant.backend != "torch" else "cpu",
                    ort_provider=options.ort_provider, native_kernels=variant.native_kernels,
                    max_phrases=max(64, options.phrases))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def text_cold_ms(grounder: Grounder, caption: str, runs: int) -> list[float]:
    """The text stage on a cache miss (a new caption): encode_text after emptying the
    Grounder's caption cache (it has no public call for that; the lock is the cache's own)."""

    def cold() -> None:
        with grounder._text_lock:
            grounder._text_cache.clear()
        grounder.encode_text(caption)

    return [_timed(cold) for _ in range(runs)]


Work = Callable[[Grounder, int], list[float]]


def alternate(grounders: dict[str, Grounder], work: Work, runs: int, rounds: int,
              warmup: int = 0) -> tuple[dict[str, list[float]], dict[str, str]]:
    """`work(grounder, n)` (n measurements) for every grounder, `warmup` untimed first, then
    `runs` in `rounds` alternating blocks (as `measure_interleaved`); a grounder whose work
    raises is left out of the later blocks, its reason kept in the second dict."""
    results: dict[str, list[float]] = {name: [] for name in grounders}
    errors: dict[str, str] = {}
    blocks = [warmup] + [runs // rounds + (b < runs % rounds) for b in range(rounds)]
    for block, count in enumerate(blocks):
        for name, grounder in grounders.items():
            if name in errors or count == 0:
                continue
            try:
                done = work(grounder, count)
            except Exception as exc:  # noqa: BLE001 (the row reports it)
                errors[name] = _reason(exc)
                continue
            if block:
                results[name].extend(done)
    return results, errors


def multistream_work(frames: list[np.ndarray], caption: str, streams: int) -> Work:
    """MLPerf MultiStream: each query is one frame of each of `streams` cameras, grounded as
    one batch (`Grounder.ground_batch`); measurements: query latencies, ms."""
    query = [frames[i % len(frames)] for i in range(streams)]
    return lambda grounder, n: [_timed(lambda: grounder.ground_batch(query, caption))
                                for _ in range(n)]


def offline_work(frames: list[np.ndarray], caption: str, batch: int) -> Work:
    """MLPerf Offline: all frames available at once, grounded in batches of `batch`;
    measurements: ms per batch."""
    order = [frames[i % len(frames)] for i in range(batch)]
    return lambda grounder, n: [_timed(lambda: grounder.ground_batch(order, caption))
                                for _ in range(n)]


def multistream(latency: list[float], streams: int) -> dict:
    return {"metric": "p99 query latency (ms)", "value": percentile(sorted(latency), 0.99),
            "streams": streams, "queries": len(latency), "latency_ms": stats(latency)}


def offline(batch_ms: list[float], batch: int) -> dict:
    return {"metric": "frames per second", "value": batch * len(batch_ms) / sum(batch_ms) * 1e3,
            "frames": batch * len(batch_ms), "batch": batch}


def singlestream(totals: list[float]) -> dict:
    """MLPerf SingleStream: one frame after another; the metric is the p90 latency."""
    return {"metric": "p90 latency (ms)", "value": percentile(sorted(totals), 0.9),
            "queries": len(totals)}


def accuracy(grounder: Grounder, options: BenchOptions) -> dict:
    """AR per group on the first --eval-limit narratives of --data's --split."""
    from groundrt.data import PNGDataset
    from groundrt.runtime.predict import score_split

    report = score_split(grounder, PNGDataset(options.data, options.split), options.eval_limit)
    keys = ("overall", "things", "stuff", "singulars", "plurals", "narratives")
    return {key: report.get(key) for key in keys}


def graph_paths(grounder: Grounder) -> dict[str, Path]:
    """The ONNX graphs an ONNX Runtime Grounder runs (image, text, phrase)."""
    graphs, precision = grounder.manifest["graphs"], grounder.backend.precision
    paths = {"image": grounder.folder / graphs["image"][precision],
             "text": grounder.folder / graphs["text"].get(precision, graphs["text"]["fp32"])}
    if "phrase" in graphs:
        paths["phrase"] = grounder.folder / graphs["phrase"]["fp32"]
    return paths


def stage_roofline(grounder: Grounder, frame: np.ndarray, caption: str,
                   stages: dict[str, dict | None], peaks: dict) -> dict:
    """Per stage: counted GOPs (graphs) or bytes (kernels), the floor at this machine's peaks,
    the achieved rate at the measured p50 and the distance to the floor (p50 / floor)."""
    if grounder.backend.name != "onnxruntime":
        raise ValueError(f"no ONNX graphs to count on the {grounder.backend.name} backend")
    text = grounder.encode_text(caption)
    ids, _ = grounder.tokenizer.encode_phrases(text.caption, list(text.spans))
    prepared = grounder.prepare(frame)
    embeddings = grounder.infer(prepared.input[None])
    paths = graph_paths(grounder)
    shapes = {"image": {"image": prepared.input[None].shape},
              "text": {"token_ids": (1, len(ids.ids))}}
    if "phrase" in paths:
        inputs = [*(a[None] for a in text.phrase_inputs), embeddings.image_keys,
                  embeddings.image_values]
        shapes["phrase"] = {n: a.shape for n, a in zip(grounder.backend.graphs.phrase_inputs,
                                                       inputs, strict=True)}
    ops = {graph: roofline.count_graph_ops(path, shapes[graph]) for graph, path in paths.items()}
    one = embeddings.item(0)
    moved = roofline.kernel_bytes(frame.shape[:2], grounder.input_shape, len(text.texts),
                                  one.mask_embed.shape[0], one.pixel_embed.shape[0],
                                  one.pixel_embed.shape[1:])
    table = {}
    for stage, graph in (("preprocess", None), ("image", "image"), ("text cold", "text"),
                         ("phrase", "phrase"), ("affinity", None), ("decode", None)):
        if stages.get(stage) is None or (graph is not None and graph not in ops):
            continue
        counted = ops.get(graph) if graph else None
        floor = roofline.stage_floor_ms(counted, moved.get(stage), peaks)
        p50 = stages[stage]["p50"]
        entry = {"p50_ms": p50, "floor_ms": floor, "x_floor": p50 / floor if floor else None}
        if counted is not None:
            entry.update(counted.to_json(), achieved_gops=counted.gops / (p50 / 1e3))
        else:
            entry.update(bytes=moved[stage], achieved_gbs=moved[stage] / (p50 / 1e3) / 1e9)
        table[stage] = entry
    frame_stages = [s for s in ("preprocess", "image", "phrase", "affinity", "decode")
                    if s in table]
    frame_gops = sum(ops[g].gops for g in ("image", "phrase") if g in ops)
    frame_bytes = sum(ops[g].weight_bytes for g in ("image", "phrase") if g in ops) + sum(
        moved.values())
    return {"stages": table,
            "frame_floor_ms": sum(table[s]["floor_ms"] for s in frame_stages),
            "frame_gops": frame_gops, "frame_bytes": frame_bytes,
            "edge_estimates_ms": {d.name: roofline.edge_estimate(d, frame_gops, frame_bytes)
                                  for d in roofline.EDGE_DEVICES}}


def _failed(variant: Variant, reason: str) -> dict:
    return {"name": variant.name, "role": variant.role, "model": variant.model,
            "backend": variant.backend, "precision": variant.precision, "status": "failed",
            "error": reason}


def _step(row: dict, key: str, fn: Callable[[], object]) -> None:
    """row[key] = fn(), or row[key + "_error"] = why it failed (the row stays)."""
    try:
        row[key] = fn()
    except Exception as exc:  # noqa: BLE001 (a part that fails is reported, not fatal)
        row[f"{key}_error"] = _reason(exc)


def run_bench(options: BenchOptions, log: Callable[[str], None] = print) -> dict:
    """Measure every variant of `options`; the report as a JSON-ready dict."""
    from groundrt.runtime.images import load_image
    from groundrt.runtime.machine import describe_machine

    unknown = set(options.scenarios) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario {sorted(unknown)[0]!r}: choose from "
                         f"{', '.join(SCENARIOS)}")
    width, height = options.size
    frames = ([cv2.resize(load_image(options.image), (width, height))] if options.image
              else sample_images(width, height))
    caption = options.caption or caption_with(options.phrases)
    report: dict = {"machine": describe_machine(), "options": dict(vars(options)),
              "caption": caption, "rows": []}
    if options.roofline:
        log("measuring this machine's peaks (MatMulInteger, MatMul, copy) ...")
        _step(report, "peaks", lambda: roofline.measure_peaks(options.threads))
    rows: dict[str, dict] = {}
    grounders: dict[str, Grounder] = {}
    for variant in variants(options):
        try:
            before = rss_mib()
            grounder = build_grounder(variant, options)
            grounder.ground(frames[0], caption)  # one call: a row that cannot run fails here
        except Exception as exc:  # noqa: BLE001 (the row says why; the others go on)
            rows[variant.name] = _failed(variant, _reason(exc))
            log(f"{variant.name}: failed ({rows[variant.name]['error']})")
            continue
        grounders[variant.name] = grounder
        folder = grounder.folder
        rows[variant.name] = {
            "name": variant.name, "role": variant.role, "model": str(folder),
            "backend": grounder.backend.name, "precision": grounder.backend.precision,
            "status": "ok", "native_kernels": grounder.postprocess.native,
            "network": 2 if grounder.phrase_queries else 1,
            "phrases": len(grounder.encode_text(caption).texts),
            "package_mib": folder_mib(folder), "rss_added_mib": rss_mib() - before}
    log(f"SingleStream: {options.runs} runs of each of {len(grounders)} rows in "
        f"{options.rounds} alternating blocks ...")
    times = measure_interleaved(grounders, frames[0], caption, options.runs, options.warmup,
                                options.rounds) if grounders else {}
    log("text cold: each row in alternating blocks ...")
    cold, cold_errors = alternate(grounders, lambda g, n: text_cold_ms(g, caption, n),
                                  min(options.runs, 30), options.rounds)
    scenarios: dict[str, dict[str, dict]] = {name: {} for name in grounders}
    for scenario, work, runs, make in (
            ("multistream", multistream_work(frames, caption, options.streams), options.runs,
             lambda values: multistream(values, options.streams)),
            ("offline", offline_work(frames, caption, options.batch),
             max(1, options.runs // options.batch), lambda values: offline(values,
                                                                           options.batch))):
        if scenario not in options.scenarios or not grounders:
            continue
        log(f"{scenario}: {runs} {'queries' if scenario == 'multistream' else 'batches'} of "
            f"each row in {options.rounds} alternating blocks ...")
        values, errors = alternate(grounders, work, runs, options.rounds, options.warmup)
        for name in grounders:
            if name in errors:
                scenarios[name][f"{scenario}_error"] = errors[name]
            else:
                scenarios[name][scenario] = make(values[name])
    for name, grounder in grounders.items():
        row = rows[name]
        log(f"{name}: {'accuracy, ' if options.data else ''}roofline ...")
        stages = {stage: stats(times[name].get(stage, [])) for stage in STAGES}
        stages["text cached"] = stats(times[name].get("text", []))
        stages["text cold"] = stats(cold[name])
        if name in cold_errors:
            row["text_cold_error"] = cold_errors[name]
        row["stages"] = {stage: stages.get(stage) for stage in REPORT_STAGES}
        row["totals_ms"] = times[name]["total"]
        row["fps"] = 1e3 / row["stages"]["total"]["mean"]
        row["scenarios"] = {"singlestream": singlestream(times[name]["total"]),
                            **scenarios[name]}
        row["gpu_memory_mib"] = gpu_memory_mib()
        if options.data:
            _step(row, "accuracy", lambda g=grounder: accuracy(g, options))
        if "peaks" in report:
            _step(row, "roofline", lambda g=grounder, r=row: stage_roofline(
                g, frames[0], caption, r["stages"], report["peaks"]))
    report["peak_rss_mib"] = peak_rss_mib()
    base = next((r for r in rows.values() if r["status"] == "ok"), None)
    for row in rows.values():
        if row["status"] == "ok" and base is not None:
            row["x_first"] = row["stages"]["total"]["p50"] / base["stages"]["total"]["p50"]
    report["rows"] = list(rows.values())
    report["reference"] = base["name"] if base else None
    report["phrases"] = base["phrases"] if base else None
    return report

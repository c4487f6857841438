"""PNG plots next to the report (matplotlib, Agg backend); skipped with a note without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.stats import CDF_POINTS


def make(results: dict[str, Any], out_dir: Path) -> tuple[list[str], list[str]]:
    """(file names written, notes)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ["matplotlib not installed: no plots (pip install '.[bench]')"]
    written: list[str] = []
    notes: list[str] = []
    for name, draw in (
        ("latency_cdf.png", _latency_cdf),
        ("cpu_per_call.png", _cpu_per_call),
        ("decision_vs_size.png", _decisions),
        ("memory_rss.png", _memory),
    ):
        try:
            figure = draw(plt, results)
        except Exception as exc:  # a plot must never cost the report
            notes.append(f"plot {name} failed: {exc}")
            continue
        if figure is None:
            continue
        figure.savefig(out_dir / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(name)
    return written, notes


def matplotlib_ticker() -> Any:
    import matplotlib.ticker

    return matplotlib.ticker


def _latency_cdf(plt: Any, results: dict[str, Any]) -> Any:
    rows = results.get("rows") or {}
    concurrencies = sorted({int(c) for row in rows.values() for c in row["concurrency"]})
    if not concurrencies:
        return None
    figure, axes = plt.subplots(
        1, len(concurrencies), figsize=(6 * len(concurrencies), 4.5), squeeze=False
    )
    for ax, c in zip(axes[0], concurrencies, strict=True):
        for row in rows.values():
            entry = row["concurrency"].get(str(c))
            if not entry or not entry["cdf_us"]:
                continue
            xs = [v / 1000 for v in entry["cdf_us"]]
            ax.plot(xs, CDF_POINTS[: len(xs)], label=row["title"], linewidth=1.5)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib_ticker().NullFormatter())
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of calls")
        ax.set_title(f"GetOperation latency CDF, concurrency {c}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return figure


def _cpu_per_call(plt: Any, results: dict[str, Any]) -> Any:
    rows = results.get("rows") or {}
    if not rows:
        return None
    concurrencies = sorted({int(c) for row in rows.values() for c in row["concurrency"]})
    keys = list(rows)
    figure, ax = plt.subplots(figsize=(max(7, 1.4 * len(keys) * len(concurrencies) / 2), 4.5))
    width = 0.8 / max(1, len(concurrencies))
    for i, c in enumerate(concurrencies):
        medians, lows, highs = [], [], []
        for key in keys:
            fig = rows[key]["concurrency"].get(str(c), {}).get("cpu_us") or {}
            median = fig.get("median") or 0.0
            medians.append(median)
            lows.append(median - (fig.get("min") or median))
            highs.append((fig.get("max") or median) - median)
        positions = [k + i * width for k in range(len(keys))]
        ax.bar(positions, medians, width, yerr=[lows, highs], capsize=3, label=f"c={c}")
    ax.set_xticks([k + width * (len(concurrencies) - 1) / 2 for k in range(len(keys))])
    ax.set_xticklabels([rows[k]["title"] for k in keys], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("front-end CPU per call (µs)")
    ax.set_title("CPU per call (median of repeats, bars: min-max)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    return figure


def _decisions(plt: Any, results: dict[str, Any]) -> Any:
    policy = (results.get("micro") or {}).get("policy") or {}
    engines = (policy.get("engines") or {}).get("sizes") or {}
    if not engines:
        return None
    sizes = sorted(int(s) for s in engines)
    figure, ax = plt.subplots(figsize=(7, 4.5))
    names = sorted({e for entry in engines.values() for e in entry})
    for engine in names:
        xs, ys = [], []
        for size in sizes:
            entry = engines[str(size)].get(engine)
            if not entry:
                continue
            values = [case["us"]["median"] for case in entry["cases"].values()]
            xs.append(size)
            ys.append(sum(values) / len(values))
        label = "opsgate (uncached)" if engine == "opsgate" else engine
        ax.plot(xs, ys, marker="o", label=label)
    cached = policy.get("cached_us") or {}
    if cached:
        xs = sorted(int(s) for s in cached)
        ys = []
        for size in xs:
            values = [fig["median"] for fig in cached[str(size)].values()]
            ys.append(sum(values) / len(values) if values else float("nan"))
        ax.plot(xs, ys, marker="s", linestyle="--", label="opsgate (cached, full policy)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("policy size (bindings)")
    ax.set_ylabel("µs per decision (log)")
    ax.set_title("Decision time vs policy size (equivalent RBAC policy)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return figure


def _memory(plt: Any, results: dict[str, Any]) -> Any:
    memory = results.get("memory") or {}
    samples = memory.get("rss_samples")
    if not samples:
        return None
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.plot([s[0] for s in samples], [s[1] / 2**20 for s in samples], marker=".")
    ax.axhline(memory["start_rss_bytes"] / 2**20, linestyle=":", label="start RSS")
    ax.set_xlabel("distinct tokens presented")
    ax.set_ylabel("gateway RSS (MiB)")
    ax.set_title(f"Gateway RSS vs distinct tokens (token cache {memory['token_cache_size']:,})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return figure

"""PNG bar charts of a run (matplotlib, headless)."""
from __future__ import annotations

import os


def write_all(results: dict, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # no display here or in CI
    paths = []
    if "model" in results:
        for kind in ("prefill", "decode"):
            paths.append(_model_chart(results["model"], kind, os.path.join(out_dir, f"model_{kind}.png")))
    if "ops" in results:
        paths.append(_ops_chart(results["ops"], os.path.join(out_dir, "op_overhead.png")))
    if "train" in results:
        paths.append(_train_chart(results["train"], os.path.join(out_dir, "train.png")))
    return [p for p in paths if p]


def _bars(ax, names: list[str], series: dict[str, list[float | None]], xlabel: str) -> None:
    import numpy as np

    y = np.arange(len(names))
    height = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        ax.barh(y + i * height, [v or 0.0 for v in values], height, label=label)
    ax.set_yticks(y + height * (len(series) - 1) / 2, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)


def _model_chart(model: dict, kind: str, path: str) -> str | None:
    import matplotlib.pyplot as plt

    labels = [m for m in model["measurements"] if m.startswith(kind)]
    rows = [r for r in model["rows"] if any("tokens_per_s" in r["results"].get(m, {}) for m in labels)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) * max(1, len(labels)) + 1.5))
    _bars(ax, [r["name"] for r in rows],
          {m: [r["results"].get(m, {}).get("tokens_per_s") for r in rows] for m in labels}, "tokens/s")
    ax.set_title(f"{kind} tokens/s, Llama {model['parameters'] / 1e6:.0f}M (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ops_chart(ops_rows: list[dict], path: str) -> str | None:
    import matplotlib.pyplot as plt

    tiny = [r for r in ops_rows if r["size"] == "tiny"]
    ops = list(dict.fromkeys(r["op"] for r in tiny))
    backends = list(dict.fromkeys(r["backend"] for r in tiny))
    if not ops:
        return None
    table = {(r["op"], r["backend"]): r.get("overhead_us") for r in tiny}
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(ops) * len(backends) + 1.5))
    _bars(ax, ops, {b: [table.get((op, b)) for op in ops] for b in backends}, "µs of overhead per call")
    ax.axvline(1.0, color="k", linestyle="--", linewidth=1)
    ax.set_title("dispatch overhead at tiny size (goal: ≤ 1 µs, dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _train_chart(train: dict, path: str) -> str | None:
    import matplotlib.pyplot as plt

    rows = [r for r in train["rows"] if "tokens_per_s" in r]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    _bars(ax, [r["name"] for r in rows], {"tokens/s": [r["tokens_per_s"] for r in rows]}, "training tokens/s")
    ax.set_title(f"training tokens/s, Llama {train['parameters'] / 1e6:.0f}M, float32")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

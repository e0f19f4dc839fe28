"""Write a run's results: bench.json (everything), bench.md (the tables), PNG charts."""
from __future__ import annotations

import json
import os

from accel.bench import charts


def write(results: dict, out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "bench.json"), os.path.join(out_dir, "bench.md")]
    with open(paths[0], "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(paths[1], "w") as f:
        f.write(markdown(results))
    paths += charts.write_all(results, out_dir)
    return paths


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = ["# accel bench", "",
             f"{m['date']} · {m['cpu']}{' (' + ' '.join(m['cpu_features']) + ')' if m.get('cpu_features') else ''} · "
             f"{m['cpus_usable']} usable CPUs · {m['memory_gib']} GiB · "
             f"Python {m['python']} · load {_fmt(m.get('load_average_at_start'), 2)} at start"
             f"{' · quick run' if results['settings']['quick'] else ''}", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ". Threads: "
             + (m.get("thread_policy") or "default") + (f", torch {m['torch_threads']}" if "torch_threads" in m else ""),
             ""]
    if "roofline" in results:
        lines += _roofline(results["roofline"])
    if "goals" in results and results["goals"]:
        lines += _goals(results["goals"])
    if "model" in results:
        lines += _model(results["model"], results["settings"])
    if "train" in results:
        lines += _train(results["train"])
    if "ops" in results:
        lines += _ops(results["ops"])
    if "fp8" in results:
        from accel.bench import fp8

        lines += fp8.markdown(results["fp8"])
    if "distributed" in results:
        from accel.bench import distributed

        lines += distributed.markdown(results["distributed"])
    lines += [f"Run took {results.get('elapsed_s', 0):.0f} s.", ""]
    return "\n".join(lines)


def _roofline(r: dict) -> list[str]:
    dtypes = sorted({k.split("matmul_gflops_")[1] for fig in r["devices"].values() for k in fig
                     if k.startswith("matmul_gflops_")}, key=lambda d: d != "float32")
    lines = ["## Roofline (measured)", "",
             "| device | bandwidth GB/s | via |" + "".join(f" {d} matmul GFLOP/s | via |" for d in dtypes),
             "|---|---:|---|" + "---:|---|" * len(dtypes)]
    for key, fig in r["devices"].items():
        cells = [f"{_fmt(fig.get(f'matmul_gflops_{d}'))} | {fig.get(f'matmul_{d}_from', '')}" for d in dtypes]
        lines.append(f"| {key} | {_fmt(fig['bandwidth_gbs'])} | {fig.get('bandwidth_from', '')} |"
                     + "".join(f" {c} |" for c in cells))
    per_backend = r.get("start", r)["per_backend"]
    lines += ["", "Per backend (y = x·1 stream over a fresh output; n×n matmul): " + "; ".join(
        f"{spec} {_fmt(f.get('bandwidth_gbs'))} GB/s, " + ", ".join(
            f"{k.split('matmul_gflops_')[1]} {_fmt(v)} GFLOP/s" for k, v in f.items() if k.startswith("matmul_gflops_"))
        if "error" not in f else f"{spec}: {f['error']}" for spec, f in per_backend.items()),
        "" if "start" not in r else "\nMeasured at the start and at the end of the run; the table keeps the better.", ""]
    return lines


def _goals(goals: list[dict]) -> list[str]:
    lines = ["## Goals", "", "| goal | target | measured | by | met |", "|---|---|---:|---|---|"]
    for g in goals:
        met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
        value = "–" if g["value"] is None else f"{_fmt(g['value'], 2)}{g['unit']}"
        lines.append(f"| {g['goal']} | {g['target']} | {value} | {g['by'] or ''} | {met} |")
    return lines + [""]


def _model(model: dict, settings: dict) -> list[str]:
    labels = model["measurements"]
    lines = [f"## Model: Llama {model['parameters'] / 1e6:.1f}M parameters", "",
             f"tokens/s (median of {settings['repeats']} interleaved repetitions), ratio to Hugging Face "
             f"`generate` of the same dtype in brackets; prefill as % of the FLOP bound, decode as % of the "
             f"bandwidth bound. Decode: {settings['decode_tokens']} new tokens after a "
             f"{settings['decode_prompt']}-token prompt.", "",
             "| row | runner | " + " | ".join(labels) + " | tokens = HF | not native |",
             "|---|---|" + "---:|" * len(labels) + "---:|---|"]
    notes: list[str] = []
    for r in model["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['name']} | {r.get('runner', '')} | " + " | ".join("–" for _ in labels)
                         + f" | | skipped: {r['skipped']} |")
            continue
        cells = []
        for label in labels:
            e = r["results"].get(label, {})
            if "tokens_per_s" not in e:
                cells.append("skipped¹" if e.get("skipped") else "–")
                if e.get("skipped"):
                    notes.append(f"¹ {r['name']} {label}: {e['skipped']}")
                continue
            ratio = f" ({e['ratio_to_hf']:.2f}×)" if "ratio_to_hf" in e else ""
            pct = e.get("pct_of_flop_bound", e.get("pct_of_bandwidth_bound"))
            share = f", {pct:.0f}%" if pct is not None else ""
            cells.append(f"{_fmt(e['tokens_per_s'])}{ratio}{share}")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r.get("not_native", {}).items())) or ""
        same = r.get("same_tokens_as_hf")
        same = "" if same is None else f"{100 * same:.0f}%"
        lines.append(f"| {r['name']} | {r['runner']} | " + " | ".join(cells) + f" | {same} | {counts} |")
    return lines + [""] + [n + "  " for n in notes] + ([""] if notes else [])


def _train(train: dict) -> list[str]:
    lines = [f"## Training: Llama {train['parameters'] / 1e6:.1f}M parameters, batch {train['batch']} × "
             f"{train['seq']} tokens, float32, AdamW", "",
             "| row | runner | tokens/s | step s | ratio to torch autograd |", "|---|---|---:|---:|---:|"]
    for r in train["rows"]:
        if "tokens_per_s" not in r:
            lines.append(f"| {r['name']} | {r.get('runner', '')} | skipped: {r.get('skipped', '?')} | | |")
            continue
        lines.append(f"| {r['name']} | {r.get('runner', 'torch autograd')} | {_fmt(r['tokens_per_s'])} | "
                     f"{r['median_s']:.3f} | {_fmt(r.get('ratio_to_reference'), 2)} |")
    return lines + [""] + _embedding_grad(train.get("embedding_grad", []))


def _embedding_grad(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    first = rows[0]
    lines = [f"### Embedding gradient: {first['tokens']} tokens × dim {first['dim']} into the vocabulary, float32", "",
             "The one-hot matmul the VJP used to build against the `index_add` scatter-add it uses now. "
             "Intermediates: bytes beyond the (V, D) result, from the shapes; peak: measured where the "
             "allocator can be read (numpy: tracemalloc, CUDA: the caching allocator).", "",
             "| backend | vocab | form | ms | speed-up | intermediates MiB | peak MiB | max |diff| |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ms = f"{1e3 * r['median_s']:.1f}" if "median_s" in r else f"skipped: {r.get('skipped', '?')}"
        peak = "" if r.get("peak_bytes") is None else f"{r['peak_bytes'] / 2**20:.1f}"
        diff = r.get("max_abs_diff_between_forms")
        lines.append(f"| {r['backend']} | {r['vocab']} | {r['form']} | {ms} | {_fmt(r.get('speedup_vs_onehot'), 1)} | "
                     f"{r['intermediate_bytes'] / 2**20:.0f} | {peak} | {'' if diff is None else f'{diff:.1e}'} |")
    return lines + [""]


def _ops(ops_rows: list[dict]) -> list[str]:
    backends = list(dict.fromkeys(r["backend"] for r in ops_rows))
    lines = ["## Op overhead (µs per call: accel eager − the backend's own kernel call)", "",
             "tiny = 4×4 class inputs (the overhead shows); model = 128 tokens of the model's sizes. "
             "A composite the backend decomposes is compared with the kernels it became.", "",
             "| op | size | " + " | ".join(backends) + " |", "|---|---|" + "---:|" * len(backends)]
    keys = list(dict.fromkeys((r["op"], r["size"]) for r in ops_rows))
    table = {(r["op"], r["size"], r["backend"]): r for r in ops_rows}
    for op, size in keys:
        cells = []
        for b in backends:
            r = table.get((op, size, b), {})
            if "overhead_us" in r:
                kernels = len(r.get("kernels", []))
                note = f" ({kernels} kernels)" if kernels > 1 else ""
                cells.append(f"{r['overhead_us']:.2f} of {_fmt(r['accel_us'], 2)}{note}")
            else:
                cells.append(r.get("skipped", "–"))
        lines.append(f"| {op} | {size} | " + " | ".join(cells) + " |")
    return lines + [""]

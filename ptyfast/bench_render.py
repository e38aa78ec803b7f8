"""``ptyfast bench``'s results as rich tables: device and model, model only, end to end, and the published
reference figures beside this run's."""

from __future__ import annotations

__all__ = ["render"]


def _fmt(v, spec: str = ".1f", none: str = "—") -> str:
    return none if v is None else format(v, spec)


def render(result: dict, console) -> None:
    """Print the benchmark as rich tables on ``console``."""
    from rich.table import Table

    d, m = result["device"], result["model"]
    flops = m.get("flops_per_pattern")
    console.print(f"[bold]device[/]: {d['cpu']} ({d['threads']} threads of {d['cores_usable']} usable cores; "
                  f"{', '.join(d['isa']) or 'no AVX-512'}; refinement FFTs: {d.get('refine_fft', 'scipy')})"
                  + (f"; GPU {d['gpu']}" if d["gpu"] else "; no GPU"))
    console.print(f"[bold]model[/]: {m['name']} ({m['architecture']}, {m['weights']}), "
                  f"{_fmt(m.get('parameters'), ',d')} parameters, "
                  + (f"{flops / 1e9:.3f} GFLOP/pattern ({m['flops_method']})" if flops else m["flops_method"]))
    for k, f in result["compute_floor"].items():
        console.print(f"[bold]compute floor[/] ({k} matmul peak {f['peak_flops'] / 1e9:.0f} GFLOP/s measured now): "
                      f"{f['floor_us_per_pattern']:.0f} µs/pattern = {f['ceiling_patterns_per_s']:,.0f} patterns/s")

    t = Table(title="model only (median of timed calls after a warm-up)")
    for col in ("backend", "prec.", "batch", "patterns/s", "p50 ms", "p99 ms", "n", "RSS MB", "GPU MB", "% peak"):
        t.add_column(col, justify="left" if col in ("backend", "prec.") else "right")
    missing: dict[tuple[str, str], str] = {}
    for r in result["model_only"]:
        if r["status"] != "ok":
            missing.setdefault((r["backend"], r["precision"]), r["reason"])
            continue
        frac = r.get("fraction_of_peak")
        t.add_row(f"{r['backend']}-{r['device']}", r["precision"], str(r["batch"]), f"{r['patterns_per_s']:,.1f}",
                  f"{r['latency_p50_ms']:.2f}", f"{r['latency_p99_ms']:.2f}", str(r["samples"]),
                  f"{r['peak_rss_mb']:.0f}", _fmt(r.get("gpu_memory_mb"), ".0f"),
                  "—" if frac is None else f"{100 * frac:.0f} %")
    console.print(t)
    for (b, p), why in missing.items():
        console.print(f"  {b} {p}: [yellow]not available[/]: {why}")
    console.print("[dim]% peak: achieved FLOP/s ÷ this device's matmul peak of the same precision (fp32/bf16); "
                  "RSS: peak resident memory of the process during the case.[/]")

    e2e = result.get("end_to_end")
    if e2e:
        s = e2e["scan"]
        console.print(f"[bold]end to end[/]: {s['frames']} patterns of 128², object {s['object_shape'][0]}², "
                      f"{s['overlap']:.0%} overlap; forward model (simulate) {s['forward_model_patterns_per_s']:,.0f} patterns/s; "
                      f"CXI write {s['cxi_write_s']:.2f} s")
        t = Table(title="end to end: lazy CXI → preprocess → infer → stitch → consistency (seconds per stage)")
        for col in ("backend", "prec.", "patterns/s", "w/o cons.", "read*", "prep.", "infer", "stitch", "cons.",
                    "wall s"):
            t.add_column(col, justify="left" if col in ("backend", "prec.") else "right")
        for r in e2e["rows"]:
            if r["status"] != "ok":
                continue
            st = r["stages_s"]
            t.add_row(f"{r['backend']}-{r['device']}", r["precision"], f"{r['patterns_per_s']:,.1f}",
                      f"{r['patterns_per_s_without_consistency']:,.1f}",
                      *[f"{st[k]:.2f}" for k in ("read", "preprocess", "infer", "stitch", "consistency")],
                      f"{r['wall_s']:.2f}")
        console.print(t)
        console.print("[dim]* read runs in a background thread and overlaps the other stages.[/]")

    t = Table(title="reference figures (published) beside this run")
    t.add_column("reference", ratio=3)
    t.add_column("published", justify="right", ratio=2)
    t.add_column("here", justify="right", ratio=3)
    ok = [r for r in result["model_only"] if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["patterns_per_s"], default=None)
    best_frac = max((r for r in ok if r.get("fraction_of_peak") is not None), key=lambda r: r["fraction_of_peak"],
                    default=None)
    b16 = [r for r in result["model_only"] if r["status"] == "ok" and r["batch"] == 16]
    ft = result.get("finetune")
    for ref in result["references"]:
        here = "—"
        if ref["key"] == "babu_a6000_trt" and b16:
            r = max(b16, key=lambda r: r["patterns_per_s"])
            here = (f"{1e6 / r['patterns_per_s']:,.0f} µs/frame at batch 16 ({r['backend']} {r['precision']}); "
                    f"{r['patterns_per_s'] / ref['patterns_per_s']:.3f}× of it")
        elif ref["key"] == "paper_a100_utilisation" and best_frac:
            here = (f"{100 * best_frac['fraction_of_peak']:.0f} % of this device's {best_frac['peak_reference']} "
                    f"matmul peak ({best_frac['backend']} {best_frac['precision']} batch {best_frac['batch']})")
        elif ref["key"] == "paper_a100_memory" and best:
            gm = [r["gpu_memory_mb"] for r in result["model_only"] if r.get("gpu_memory_mb")]
            here = (f"{max(gm):.0f} MB GPU" if gm else
                    f"host peak RSS {max(r['peak_rss_mb'] for r in result['model_only'] if r['status'] == 'ok'):.0f} MB")
        elif ref["key"] == "paper_finetune" and ft and ft.get("status") == "ok":
            here = f"{ft['epoch_s']:.1f} s/epoch on {ft['device']} → {ft['epochs_300_s']:.0f} s for 300 epochs"
        t.add_row(ref["what"], f"{ref['value']} [dim]({ref['source']})[/]", here)
    for k, f in result["compute_floor"].items():
        t.add_row(f"compute floor of this device ({k} matmul peak)", "—",
                  f"{f['ceiling_patterns_per_s']:,.0f} patterns/s")
    console.print(t)

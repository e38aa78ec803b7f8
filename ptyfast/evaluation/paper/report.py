"""The markdown report of a paper-protocol run, beside the paper's own numbers."""

from __future__ import annotations

import math

from ptyfast.evaluation.paper.protocol import (LABELS, PAPER_FINETUNE, PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3,
                                               PAPER_TRAINING)


def _cell(v, spec=".3f", none="—") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, spec)


def _budget_section(r: dict) -> list[str]:
    hw = r["hardware"]
    lines = ["## Training budget", "",
             f"Hardware: {hw['cpu']}, {hw['cores']} usable cores" + (f", GPU {hw['gpu']}" if hw["gpu"] else ", no GPU")
             + ". The paper trained on one NVIDIA A100 80 GB.", "",
             "| model | origin | steps × batch | patterns seen | wall time | best val. loss | the paper |",
             "|---|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        t = m["training"] or {}
        steps, batch = t.get("steps"), t.get("batch")
        seen = t.get("patterns_seen") or (steps * batch if steps and batch else None)
        secs = t.get("total_time_s", t.get("time_s"))
        lines.append(f"| {LABELS[name]} | {m['origin']} | {steps} × {batch} | {_cell(seen, ',')} | "
                     f"{_cell(secs / 60 if secs else None, '.1f')} min | {_cell(t.get('best_val_loss'), '.4f')} | "
                     f"{PAPER_TRAINING.get(name, '—')} |")
    cfg = r["config"]
    lines += ["", f"Each model trained here had a budget of **{cfg['budget_minutes']:g} minutes** of this machine"
              + (f" (fixed at {cfg['train_steps']} steps)" if cfg["train_steps"] else "")
              + ", with the shipped PtyNet-S's recipe and data options. Against the paper's 3.2 h (PtyNet-S) and "
              "23.4 h (PtyNet-B) on an A100 — a GPU with roughly 100× the dense bf16 throughput of these two cores — "
              "that is a few ten-thousandths of the paper's compute: the trained comparison models are far from "
              "converged, and their scores below are lower bounds, not a verdict on the architectures.", ""]
    return lines


def _baseline_rows(b: dict, ncols: int, cols=("phase_psnr", "phase_ssim", "phase_mse")) -> list[str]:
    out = []
    for name, q in b.items():
        cells = " | ".join(f"{_cell(q[c], '.2f' if 'psnr' in c else '.3f' if 'ssim' in c else '.4f')}" for c in cols)
        out.append(f"| *baseline: {name}* | {cells} |" + " |" * max(ncols - len(cols) - 1, 0))
    return out


def _table1_section(r: dict) -> list[str]:
    """Table 1 analogue: parameters, compute, memory, speed and phase quality of each model."""
    t1 = r["table1"]
    L = ["## Table 1 analogue: PtyNet-S vs PtychoNN on the same data", "",
         "| model | parameters | GFLOP/pattern | phase MSE (50 %) | phase PSNR / SSIM (50 %) | memory, batch 16 fp32 | "
         "CPU patterns/s | paper: parameters | paper: phase MSE | paper: A100 share | paper: GPU memory |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in t1["rows"].items():
        p = PAPER_TABLE1.get(name, {})
        mem = row["memory_bytes_batch16"]
        L.append(f"| {LABELS[name]} | {row['parameters']:,} | {row['flops_per_pattern'] / 1e9:.3f} | "
                 f"{row['phase_mse_50']:.4f} | {row['phase_psnr_50']:.2f} dB / {row['phase_ssim_50']:.3f} | "
                 f"{_cell(mem / 2**20 if mem is not None else None, '.0f')} MB ({row['memory_kind']}) | "
                 f"{row['patterns_per_s']:.0f} | {_cell(p.get('parameters_k'), ',')} k | {_cell(p.get('phase_mse'), '.4f')} | "
                 f"{p.get('gpu_share', '—')} | {_cell(p.get('gpu_memory_gb'), '.1f')} GB |")
    for bname, q in t1["baselines_50"].items():
        L.append(f"| *baseline: {bname}* | — | — | {q['phase_mse']:.4f} | {q['phase_psnr']:.2f} dB / "
                 f"{q['phase_ssim']:.3f} | | | | | | |")
    L += ["", "The paper's phase MSE is on PtychoNN's tungsten test pattern and its resource figures on an A100; "
          "here the phase MSE is on held-out cat faces at 50 % overlap (mean over the test objects), memory is "
          "that of one fp32 forward pass at batch 16 (GPU allocation on CUDA, else the rise of the process's peak "
          "RSS), and throughput is model inference inside the reconstruct pipeline on this machine. The paper's "
          "Table 1 prints 5512 k parameters for PtychoNN and 1247 k for PtychoNet, while its text gives PtychoNN "
          "1.2 M: the two look swapped (PtychoNN as published has 1,247,074 at 128²).", ""]
    return L


def _table2_section(r: dict) -> list[str]:
    """Table 2: phase quality against overlap, with the baselines and the inference speed."""
    t2 = r["table2"]
    ovs = list(next(iter(t2["models"].values())).keys())
    L = ["## Table 2: phase quality against overlap", "",
         "| model | overlap | PSNR (dB) | SSIM | MSE | paper PSNR | paper SSIM | paper MSE | FRC res. (cyc/px) |",
         "|---|---|---|---|---|---|---|---|---|"]
    for o in ovs:
        for name, d in t2["models"].items():
            q = d[o]["mean"]
            p = PAPER_TABLE2.get(name, {}).get(float(o))
            L.append(f"| {LABELS[name]} | {float(o):.0%} | {q['phase_psnr']:.2f} | {q['phase_ssim']:.3f} | "
                     f"{q['phase_mse']:.4f} | {_cell(p[0] if p else None, '.3f')} | {_cell(p[1] if p else None, '.3f')} | "
                     f"{_cell(p[2] if p else None, '.3f')} | {q['frc_resolution']:.3f} |")
        for bname, q in t2["baselines"][o].items():
            L.append(f"| *baseline: {bname}* | {float(o):.0%} | {q['phase_psnr']:.2f} | {q['phase_ssim']:.3f} | "
                     f"{q['phase_mse']:.4f} | | | | {q['frc_resolution']:.3f} |")
    L += ["", "Means over the test objects (per-object figures in `results.json`). The paper gives no 0 % column "
          "in its text. *blurred* is the truth blurred by σ = 4 px. Where a model does not beat the flat guess, "
          "it has not learnt the mapping (see the training budget above).", "",
          "![reconstructions](figures/reconstructions.png)", "", "![FRC](figures/frc.png)", ""]
    inf = t2["inference"]
    L += ["Inference: " + "; ".join(f"{LABELS[n]} {v['patterns_per_s_infer']:.0f} patterns/s "
                                   f"({v['backend'].split(':')[0]})" for n, v in inf.items()) + ".", ""]
    return L


def _table3_section(r: dict) -> list[str]:
    """Table 3: noise and fine-tuning."""
    t3 = r["table3"]
    conds = ["clear", "noise", "finetune_clear", "finetune_noise"]
    L = [f"## Table 3: noise and fine-tuning ({LABELS[t3['model']]}, {t3['image']} as amplitude and phase, "
         f"{t3['overlap']:.0%} overlap)", "",
         f"Noise: Poisson at {t3['noise_photons']:.3g} photons per frame. Fine-tuning: ptyfast.finetune "
         f"(L1 amplitude loss, paper schedule), {t3['epochs']} epochs (the paper: 300). The paper fine-tuned "
         "PtyNet-B; here the PtyNet-S of Table 1 is fine-tuned.", "",
         "| channel | condition | PSNR (dB) | SSIM | MSE | paper PSNR | paper SSIM | paper MSE |",
         "|---|---|---|---|---|---|---|---|"]
    for ch in ("amplitude", "phase"):
        for c in conds:
            q = t3["conditions"][c]
            p = PAPER_TABLE3[ch][c]
            L.append(f"| {ch} | {c.replace('_', ' ')} | {q[f'{ch}_psnr']:.2f} | {q[f'{ch}_ssim']:.3f} | "
                     f"{q[f'{ch}_mse']:.4f} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} |")
        for bname, q in t3.get("baselines", {}).items():
            L.append(f"| {ch} | *baseline: {bname}* | {q[f'{ch}_psnr']:.2f} | {q[f'{ch}_ssim']:.3f} | "
                     f"{q[f'{ch}_mse']:.4f} | | | |")
    ft = [t3["conditions"][c] for c in ("finetune_clear", "finetune_noise")]
    L += ["", "Fine-tuning time on this machine: " + ", ".join(
        f"{c.replace('finetune_', '')} {q['time_s']:.0f} s (R-factor {q['r_factor_before']:.3f} → "
        f"{q['r_factor_after']:.3f})" for c, q in zip(("clear", "noise"), ft))
        + f"; the paper: {PAPER_FINETUNE}.", "",
        "![fine-tuning](figures/finetune.png)", "", "![fine-tuning FRC](figures/finetune_frc.png)", ""]
    return L


def _figure9_section(r: dict) -> list[str]:
    """Figure 9: rPIE iterations from the network's output against a random start."""
    f9 = r["figure9"]
    mode = "sequential" if not f9["batch"] else "batch %d" % f9["batch"]
    L = [f"## Figure 9: rPIE from the network's output vs from a random start ({LABELS[f9['model']]})", "",
         f"Iterations the network start needs to reach the error a random start reaches after "
         f"{f9['reference_iterations']} rPIE iterations (probe known and fixed, "
         f"{mode} updates). The paper shows curves only.", "",
         "| overlap | patterns | target error | iterations from the network | speed-up | seconds |",
         "|---|---|---|---|---|---|"]
    for o, d in f9["overlaps"].items():
        its = d["iterations"] if d["iterations"] else "> %d" % f9["reference_iterations"]
        L.append(f"| {float(o):.0%} | {d['frames']} | {d['target_error']:.4g} | {its} | "
                 f"{_cell(d['speedup'], '.1f')}{'×' if d['speedup'] else ''} | {d['seconds']:.0f} |")
    L += ["", "![convergence](figures/convergence.png)", ""]
    return L


def render_report(r: dict) -> str:
    """The markdown report of a :func:`run_paper_protocol` result dict."""
    cfg = r["config"]
    L = ["# ptyfast: the seed paper's experiments on its own protocol", "",
         f"ptyfast {r['ptyfast_version']}, {r['created']}, {r['total_time_s'] / 60:.1f} min in total. "
         f"Images: {r['split']}. Test objects ({cfg['test_objects']}, {cfg['object_size']}² px, amplitude and phase "
         f"from different faces): {'; '.join(r['objects'])}. Bundled probe (Σ|P|² = 1000), raster scans with "
         f"±{cfg['jitter']:g} px jitter, noise-free unless stated; quality on the stitched interior (weight ≥ 0.1·max), "
         "phase offset removed, PSNR over the truth's span.", "",
         "**Read every number against the baselines beside it**: a flat (mean) guess and the truth blurred by "
         "σ = 4 px, scored on the same pixels. The paper's Table 2 PSNRs (12.4–14.3 dB) sit at the flat guess's "
         "level while its SSIMs (≈ 0.8) are far above it, so its metric definitions are unclear; a comparison of "
         "absolute numbers with the paper is therefore only indicative.", ""]
    L += _budget_section(r)
    if "table1" in r:
        L += _table1_section(r)
    if "table2" in r:
        L += _table2_section(r)
    if "table3" in r:
        L += _table3_section(r)
    if "figure9" in r:
        L += _figure9_section(r)
    L += ["## Reproduce", "", "```", "ptyfast paper --images DIR -o OUT "
          f"--budget-minutes {cfg['budget_minutes']:g} --models {','.join(cfg['models'])}"
          + (" --model PTYNET_S.pt  # PtyNet-S weights for the paper's probe" if cfg.get("model_s") else ""), "```", ""]
    return "\n".join(L)

"""Time and extra peak memory of the loss library against plain implementations, measured in the same run.

    python scripts/bench_losses.py                      # N=2048 tokens, V=32000, H=256 (the issue's sizes)
    python scripts/bench_losses.py --sizes 512x32000 2048x32000 --repeats 5

Every case runs in its own subprocess so peak memory is not polluted by earlier cases.  Peak memory is the
CUDA allocator's high-water mark on GPU, and the resident-set high-water mark (VmHWM, reset through
/proc/self/clear_refs) on CPU.  "Extra" = peak during forward+backward minus memory with the inputs allocated.
Writes a markdown table, JSON and a PNG plot to --out (default docs/bench).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

CASES = {
    # name: (description, fused?)
    "plain_csd": ("plain float32 CSD: softmax, difference, product, autograd", False),
    "plain_surrogate": ("official-release surrogate (float32, autograd)", False),
    "csd": ("csd.losses get_loss('csd')", False),
    "plain_linear_csd": ("both logits (h @ W.T) + plain float32 CSD", True),
    "fused_csd": ("csd.losses fused_linear_loss('csd')", True),
    # The peer: Liger-Kernel's chunked fused-linear JSD (optional: pip install liger-kernel), same inputs.
    "fused_js": ("csd.losses fused_linear_loss('js') (λ 0.9 = Liger beta 0.1)", True),
    "fused_js_compiled": ("fused_linear_loss('js', compile=True): torch.compile'd chunk value-and-gradient", True),
    "fused_csd_compiled": ("fused_linear_loss('csd', compile=True)", True),
    "liger_jsd": ("Liger-Kernel LigerFusedLinearJSDLoss, eager (beta 0.1, hard-loss weight 0)", True),
    "liger_jsd_compiled": ("Liger-Kernel LigerFusedLinearJSDLoss, torch.compile'd chunks", True),
}
LIGER_CASES = ("liger_jsd", "liger_jsd_compiled")


def liger_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def plain_csd(student, teacher, labels):
    """½·Σ_x p(x)(d[x] − E_p d)² with p = softmax(student) held constant, written the naive way."""
    student, teacher = student.float(), teacher.float()
    probs = torch.softmax(student, dim=-1).detach()
    diff = student - teacher
    centred = diff - (probs * diff).sum(-1, keepdim=True)
    per_token = 0.5 * (probs * centred * centred).sum(-1)
    mask = (labels != -100).float()
    return (per_token * mask).sum() / mask.sum()


def plain_surrogate(student, teacher, labels):
    student, teacher = student.float(), teacher.float()
    probs = torch.softmax(student, dim=-1)
    diff = student - teacher
    per_token = ((diff - (probs * diff).sum(-1, keepdim=True)).detach() * probs.detach() * student).sum(-1)
    mask = (labels != -100).float()
    return (per_token * mask).sum() / mask.sum()


def current_memory(device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_memory(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def run_case(case: str, tokens: int, vocab: int, hidden: int, repeats: int, dtype: torch.dtype) -> dict:
    from csd.losses import fused_linear_loss, get_loss

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator(device=device).manual_seed(0)
    labels = torch.randint(0, vocab, (tokens,), device=device, generator=gen)
    labels[:: 8] = -100  # some ignored positions, as with prompts and padding
    if CASES[case][1]:
        student_hidden = torch.randn(tokens, hidden, device=device, dtype=dtype, generator=gen).requires_grad_()
        student_weight = (torch.randn(vocab, hidden, device=device, dtype=dtype, generator=gen) * 0.05).requires_grad_()
        teacher_hidden = torch.randn(tokens, hidden, device=device, dtype=dtype, generator=gen)
        teacher_weight = torch.randn(vocab, hidden, device=device, dtype=dtype, generator=gen) * 0.05

        if case in LIGER_CASES:
            from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

            liger = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.1,
                                            compiled=case == "liger_jsd_compiled")

        def step():
            if case.startswith("fused_"):
                name = case.removeprefix("fused_").removesuffix("_compiled")
                loss = fused_linear_loss(name, student_hidden, student_weight, teacher_hidden, teacher_weight, labels,
                                         compile=case.endswith("_compiled"))
            elif case in LIGER_CASES:
                loss = liger(student_hidden, student_weight, teacher_hidden, teacher_weight, labels)
            else:
                with torch.no_grad():
                    teacher_logits = teacher_hidden @ teacher_weight.T
                loss = plain_csd(student_hidden @ student_weight.T, teacher_logits, labels)
            loss.backward()
            student_hidden.grad = student_weight.grad = None
            return loss.item()
    else:
        student = (torch.randn(tokens, vocab, device=device, dtype=dtype, generator=gen) * 2).requires_grad_()
        teacher = torch.randn(tokens, vocab, device=device, dtype=dtype, generator=gen) * 2
        loss_fn = {"plain_csd": plain_csd, "plain_surrogate": plain_surrogate}.get(case) or get_loss("csd")

        def step():
            loss = loss_fn(student[None], teacher[None], labels[None])
            loss.backward()
            student.grad = None
            return loss.item()

    value = step()  # warm-up (and compilation, for the compiled peer)
    if device.type == "cuda":
        torch.cuda.synchronize()
    base = current_memory(device)
    reset_peak(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    extra = max(peak_memory(device) - base, 0)
    return {"case": case, "tokens": tokens, "vocab": vocab, "hidden": hidden, "dtype": str(dtype).replace("torch.", ""),
            "device": device.type, "time_s": statistics.median(times), "extra_peak_mb": extra / 2**20, "value": value}


def measure(case, tokens, vocab, hidden, repeats, dtype) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, "--sizes", f"{tokens}x{vocab}", "--hidden", str(hidden),
           "--repeats", str(repeats), "--dtype", dtype]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def peer_lines(rows) -> list[str]:
    """Ours against Liger-Kernel's fused JSD (its faster variant), per size; a note when Liger is absent."""
    if not any(r["case"] in LIGER_CASES for r in rows):
        return ["", "Liger-Kernel not installed: no peer column (pip install liger-kernel to add it)."]
    lines = ["", "Against Liger-Kernel's LigerFusedLinearJSDLoss (same inputs; ratio < 1 = ours smaller/faster; "
             "|Δ value| = ours − Liger's JSD):", "",
             "| ours | Liger | N × V | time ratio | memory ratio | abs value difference |", "|---|---|---|---|---|---|"]
    for ours in (r for r in rows if r["case"].startswith(("fused_js", "fused_csd"))):
        for peer in (r for r in rows if r["case"] in LIGER_CASES and r["tokens"] == ours["tokens"] and r["vocab"] == ours["vocab"]):
            difference = abs(ours["value"] - peer["value"]) if ours["case"].startswith("fused_js") else float("nan")
            lines.append(f"| {ours['case']} | {peer['case']} | {ours['tokens']} × {ours['vocab']} | "
                         f"{ours['time_s'] / peer['time_s']:.2f} | {ours['extra_peak_mb'] / max(peer['extra_peak_mb'], 1e-9):.2f} | "
                         f"{difference:.1e} |")
    return lines


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['case']}\n{r['tokens']}x{r['vocab']}" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in ((axes[0], "time_s", "forward+backward time (s)"), (axes[1], "extra_peak_mb", "extra peak memory (MB)")):
        colors = ["tab:gray" if r["case"].startswith("plain") else "tab:blue" for r in rows]
        ax.bar(range(len(rows)), [r[key] for r in rows], color=colors)
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(title)
    fig.suptitle(f"csd.losses vs plain implementations ({rows[0]['device']}, {rows[0]['dtype']}; gray = plain)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["2048x32000"], help="NxV token-by-vocabulary sizes")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", default="docs/bench")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes]
    dtype = getattr(torch, args.dtype)
    if args.worker:
        print(json.dumps(run_case(args.worker, *sizes[0], args.hidden, args.repeats, dtype)))
        return

    rows = []
    for tokens, vocab in sizes:
        for case in args.cases:
            if case in LIGER_CASES and not liger_available():
                print(f"{case}: skipped, liger-kernel is not installed (pip install liger-kernel)", file=sys.stderr)
                continue
            rows.append(measure(case, tokens, vocab, args.hidden, args.repeats, args.dtype))
            print(f"{case:18s} N={tokens} V={vocab}: {rows[-1]['time_s']:.3f} s, {rows[-1]['extra_peak_mb']:.0f} MB", file=sys.stderr)

    lines = [f"device: {rows[0]['device']}, dtype: {args.dtype}, H={args.hidden}, median of {args.repeats} forward+backward passes", "",
             "| loss | N × V | time (s) | extra peak (MB) | time ratio | memory ratio |", "|---|---|---|---|---|---|"]
    for row in rows:
        ref_case = "plain_linear_csd" if CASES[row["case"]][1] else "plain_csd"
        ref = next((r for r in rows if r["case"] == ref_case and r["tokens"] == row["tokens"] and r["vocab"] == row["vocab"]), None)
        ratios = (f"{row['time_s'] / ref['time_s']:.2f} | {row['extra_peak_mb'] / max(ref['extra_peak_mb'], 1e-9):.2f}"
                  if ref else " | ")
        lines.append(f"| {row['case']} | {row['tokens']} × {row['vocab']} | {row['time_s']:.3f} | {row['extra_peak_mb']:.0f} | "
                     f"{ratios} |")
    lines += peer_lines(rows)
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_losses.md").write_text(table + "\n")
    (out / "bench_losses.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, out / "bench_losses.png")
    print(f"wrote {out}/bench_losses.md, .json, .png", file=sys.stderr)


if __name__ == "__main__":
    main()

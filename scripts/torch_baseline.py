#!/usr/bin/env python3
"""PyTorch baseline for the demo model: a development tool, not used by the tests or the product.

The model of configs/demo.toml (LLaMA-style: RMSNorm, RoPE, GQA attention, SwiGLU, tied LM head)
written plainly in eager PyTorch, trained with AdamW and global-norm clipping at 2 threads, to
compare training-step tokens/s with LoongTrain.ts on 2 ranks at the same sequence length
(docs/kernels-blas.md, "PyTorch comparison"). Attention is the textbook one: an S x S score
matrix per head, a causal mask and softmax.

  /usr/bin/python3 scripts/torch_baseline.py                       # seqLen 2048 and 4096, both sides
  /usr/bin/python3 scripts/torch_baseline.py --seq-lens 2048 --no-ours
  /usr/bin/python3 scripts/torch_baseline.py --longest             # doubling search for the longest seqLen

Needs Debian's python3-torch (apt-get install -y python3-torch) and, for --ours (default), a
built checkout (npx tsc -p .). Prints a table on stderr and JSON on stdout.
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def openblas_coretype():
    """OpenBLAS's kernel set for this CPU by the rule of src/kernels/blas/library.ts's openBlasCoreType
    (Debian's DYNAMIC_ARCH 0.3.21 falls back to SSE3 kernels on a CPU newer than itself, such as
    Sapphire Rapids: about 5x slower SGEMM), so that torch's GEMMs run the kernels ours do."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    return "Haswell" if {"avx2", "fma"} <= flags else None


# Both are read once, when torch loads libgomp and OpenBLAS, so they are set before the import.
# Debian's torch runs OpenMP threads and OpenBLAS's own pthreads side by side: with OpenMP's
# default busy-waiting they fight over the 2 cores (10x slower steps on a shared machine); passive
# waiting keeps both thread pools and their speed. A caller's own OPENBLAS_CORETYPE wins, as for ours.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_CORE = openblas_coretype()
if _CORE is not None:
    os.environ.setdefault("OPENBLAS_CORETYPE", _CORE)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# configs/demo.toml's model; vocab 257 = the byte tokenizer's 256 bytes + separator.
DEMO = dict(dim=64, layers=2, heads=4, kv_heads=2, ffn_dim=176, vocab=257, rope_theta=10000.0, norm_eps=1e-5)


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):
    """Rotate pairs (2i, 2i+1) of x [S, H, d] by position * theta^(-2i/d), as the Kernels interface does."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.hkv, self.d = c["heads"], c["kv_heads"], c["dim"] // c["heads"]
        dim = c["dim"]
        self.norm1, self.norm2 = RMSNorm(dim, c["norm_eps"]), RMSNorm(dim, c["norm_eps"])
        self.wq = torch.nn.Linear(dim, self.h * self.d, bias=False)
        self.wk = torch.nn.Linear(dim, self.hkv * self.d, bias=False)
        self.wv = torch.nn.Linear(dim, self.hkv * self.d, bias=False)
        self.wo = torch.nn.Linear(self.h * self.d, dim, bias=False)
        self.w_gate = torch.nn.Linear(dim, c["ffn_dim"], bias=False)
        self.w_up = torch.nn.Linear(dim, c["ffn_dim"], bias=False)
        self.w_down = torch.nn.Linear(c["ffn_dim"], dim, bias=False)

    def forward(self, x, cos, sin, mask):
        s = x.shape[0]
        y = self.norm1(x)
        q = rope(self.wq(y).view(s, self.h, self.d), cos, sin)
        k = rope(self.wk(y).view(s, self.hkv, self.d), cos, sin)
        v = self.wv(y).view(s, self.hkv, self.d)
        rep = self.h // self.hkv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [H, S, d]
        scores = (q @ k.transpose(1, 2)) / math.sqrt(self.d)
        att = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v
        x = x + self.wo(att.transpose(0, 1).reshape(s, self.h * self.d))
        y = self.norm2(x)
        return x + self.w_down(F.silu(self.w_gate(y)) * self.w_up(y))


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = torch.nn.Embedding(c["vocab"], c["dim"])
        self.blocks = torch.nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["dim"], c["norm_eps"])
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, tokens, labels):
        s = tokens.shape[0]
        d = self.c["dim"] // self.c["heads"]
        inv = self.c["rope_theta"] ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
        ang = torch.arange(s, dtype=torch.float32)[:, None] * inv[None, :]
        cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
        mask = torch.ones(s, s, dtype=torch.bool).triu(1)
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x, cos, sin, mask)
        logits = self.norm(x) @ self.embed.weight.t()  # tied head
        return F.cross_entropy(logits, labels)


def timed_steps(model, lr, vocab, seq_len, steps, per_step=None):
    """Wall ms of each of `steps` training steps (forward, backward, clip to norm 1, AdamW) of
    model(tokens, labels) on one random sequence of seq_len; per_step(i, ms, loss) after each."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    data = torch.randint(0, vocab - 1, (seq_len + 1,))
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = model(data[:-1], data[1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append((time.perf_counter() - t0) * 1000)
        if per_step:
            per_step(i, times[-1], loss.item())
    return times


def torch_step_times(seq_len, steps, seed=1234):
    """Wall seconds of each of `steps` training steps of the demo model at seq_len."""
    torch.manual_seed(seed)
    return [ms / 1000 for ms in timed_steps(Model(DEMO), 1e-2, DEMO["vocab"], seq_len, steps)]


def ours_step_times(seq_len, steps, layout, kernels, timeout):
    """Step seconds of LoongTrain.ts (the CLI, configs/demo.toml) at seq_len on the given layout."""
    with tempfile.TemporaryDirectory() as tmp:
        sets = [f"train.seqLen={seq_len}", f"train.steps={steps}", "optim.warmupSteps=0", f"train.kernels={kernels}",
                f"log.dir={tmp}", f"save.dir={tmp}/ck", "save.every=0", "log.progress=none", "train.arenaMiB=4096",
                "train.commTimeoutMs=600000"] + [f"parallel.{kv}" for kv in layout.split(",")]
        cmd = ["node", os.path.join(ROOT, "dist/src/cli/main.js"), "train", "--config", os.path.join(ROOT, "configs/demo.toml"), "--overwrite"]
        for s in sets:
            cmd += ["--set", s]
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (hard, hard)))
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
        with open(os.path.join(tmp, "metrics.jsonl")) as f:
            return [json.loads(line)["stepMs"] / 1000 for line in f if line.strip()]


def tokens_per_sec(seq_len, times, warmup):
    return seq_len / statistics.median(times[warmup:])


def longest(fn, start, limit):
    """Largest power-of-two seqLen from `start` at which fn(seq_len) completes one step (doubling until it fails)."""
    best, why, s = None, "", start
    while s <= limit:
        try:
            t = fn(s)
            best = s
            print(f"  seqLen {s}: one step in {t:.1f} s", file=sys.stderr)
        except Exception as e:  # out of memory, over time, a rank failure: that length does not train
            why = f"seqLen {s}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            print(f"  {why}", file=sys.stderr)
            break
        s *= 2
    return {"longestSeqLen": best, "stoppedAt": why or f"search limit {limit}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--steps", type=int, default=6, help="training steps per measurement (default 6)")
    ap.add_argument("--warmup", type=int, default=2, help="leading steps left out of the median (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads (default 2)")
    ap.add_argument("--layout", default="hp=2,cp=1", help="our 2-rank layout as parallel.key=value pairs (default hp=2,cp=1)")
    ap.add_argument("--kernels", default="auto", help="our kernel backend (default auto: the fastest available)")
    ap.add_argument("--no-ours", action="store_true", help="measure PyTorch only")
    ap.add_argument("--longest", action="store_true", help="also search the longest seqLen each trains at (one step each)")
    ap.add_argument("--longest-limit", type=int, default=1 << 20, help="stop the search at this seqLen")
    ap.add_argument("--step-timeout", type=float, default=300, help="seconds one step may take in the search (default 300)")
    ap.add_argument("--memory-gib", type=float, default=12, help="address-space cap for PyTorch, so that running out is an error, not the OOM killer")
    a = ap.parse_args()
    if a.steps <= a.warmup:
        ap.error("--steps must exceed --warmup")
    torch.set_num_threads(a.threads)
    # Soft limit only: ours_step_times' node children lift it again (preexec_fn below).
    resource.setrlimit(resource.RLIMIT_AS, (int(a.memory_gib * 2**30), resource.getrlimit(resource.RLIMIT_AS)[1]))

    rows = []
    for s in a.seq_lens:
        row = {"seqLen": s, "torchTokensPerSec": tokens_per_sec(s, torch_step_times(s, a.steps), a.warmup)}
        if not a.no_ours:
            row["oursTokensPerSec"] = tokens_per_sec(s, ours_step_times(s, a.steps, a.layout, a.kernels, None), a.warmup)
            row["ratio"] = row["oursTokensPerSec"] / row["torchTokensPerSec"]
        rows.append(row)
        print(f"seqLen {s}: PyTorch {row['torchTokensPerSec']:.0f} tok/s" +
              (f", LoongTrain.ts {row['oursTokensPerSec']:.0f} tok/s, ratio {row['ratio']:.2f}" if "ratio" in row else ""), file=sys.stderr)

    report = {"torch": torch.__version__, "threads": a.threads, "layout": a.layout, "kernels": a.kernels, "model": DEMO, "steps": a.steps, "warmup": a.warmup, "results": rows}
    if a.longest:
        def capped(t):
            if t > a.step_timeout:
                raise TimeoutError(f"one step took {t:.0f} s > {a.step_timeout:.0f} s")
            return t
        print("longest seqLen, PyTorch:", file=sys.stderr)
        report["torchLongest"] = longest(lambda s: capped(torch_step_times(s, 1)[0]), a.seq_lens[0], a.longest_limit)
        if not a.no_ours:
            print("longest seqLen, LoongTrain.ts:", file=sys.stderr)
            # The whole run (start-up, data, one step) may take a minute more than the step.
            report["oursLongest"] = longest(lambda s: capped(ours_step_times(s, 1, a.layout, a.kernels, a.step_timeout + 60)[0]), a.seq_lens[0], a.longest_limit)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch peer of our model for the bench: a development tool, never a dependency of the product.

The model of issue 11's comparison (LLaMA-style: RMSNorm, RoPE on pairs (2i, 2i+1), GQA, SwiGLU,
tied LM head; AdamW betas 0.9/0.95, eps 1e-8, weight decay 0.1; global-norm clipping at 1.0) at
configurable dims, trained on random bytes, in one of two attention forms:

  naive    an S x S score matrix per head, causal mask, softmax (as scripts/torch_baseline.py):
           memory O(H * S^2) per layer.
  chunked  flash-style: loop over query blocks and key blocks with an online softmax (running
           row max and sum), key blocks above the causal diagonal skipped, never an S x S matrix.
           A custom autograd.Function whose backward recomputes each block's probabilities from
           the saved log-sum-exp (autograd through the loop would keep every block's scores,
           O(H * S^2) again). Memory O(H * S * d) per layer plus one block pair.

  /usr/bin/python3 scripts/torch_peer.py --attention chunked --seq-len 8192 --steps 4
  /usr/bin/python3 scripts/torch_peer.py --json --attention naive --seq-len 4096 --steps 3 --threads 2
  /usr/bin/python3 scripts/torch_peer.py --check          # chunked == naive in float64 (loss, grads); exit 1 if not

--json prints one object on stdout: {"torch", "threads", "attention", "seqLen", "block", "model",
"stepMs": [wall ms of each step: forward, backward, clip, AdamW]}; any failure (running out of
the --memory-gib address space included) prints {"error": "..."} and exits 1. Without --json a
line per step goes to stderr as well. src/train/bench-peer.ts is the caller.
Needs Debian's python3-torch (apt-get install -y python3-torch).
"""
import argparse
import ctypes
import json
import math
import os
import resource
import sys


# torch_baseline sets OMP_WAIT_POLICY and OPENBLAS_CORETYPE before it loads torch (both are read
# once, when torch loads libgomp and OpenBLAS), so it is imported first.
from torch_baseline import RMSNorm, rope, timed_steps  # noqa: E402  (this script's folder is on sys.path)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# Issue 11's model; vocab 257 = the byte tokenizer's 256 bytes + separator.
ISSUE_MODEL = dict(dim=256, layers=4, heads=8, kv_heads=2, ffn_dim=688, vocab=257, rope_theta=10000.0, norm_eps=1e-5)


def set_blas_threads(n):
    """OpenBLAS's thread count (torch.set_num_threads does not reach it; an inherited
    OPENBLAS_NUM_THREADS=1, as our blas loader sets, would hold the peer's GEMMs to one core).
    Returns OpenBLAS's kernel set name, or None when torch's BLAS is not OpenBLAS."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")  # the copy torch already loaded
        lib.openblas_set_num_threads(n)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return None


def naive_attention(q, k, v):
    """Causal softmax(q kᵀ / √d) v over [H, S, d] with the whole S x S score matrix."""
    s = q.shape[1]
    mask = torch.ones(s, s, dtype=torch.bool).triu(1)
    scores = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[2])
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v


def _key_blocks(qs, qe, block):
    """Key blocks [ks, ke) a query block [qs, qe) attends to (none starts past its last row), and
    whether each crosses the diagonal (needs the mask: some key is later than some query)."""
    for ks in range(0, qe, block):
        ke = min(ks + block, qe)
        yield ks, ke, ke - 1 > qs


def _diag_mask(qs, qe, ks, ke):
    """True where key position > query position within the block pair."""
    return torch.arange(ks, ke)[None, :] > torch.arange(qs, qe)[:, None]


class ChunkedAttention(torch.autograd.Function):
    """Causal flash-style attention over [H, S, d] in blocks of `block` rows and keys.

    Forward keeps per query row the running max m and sum l of exp(score - m) and rescales the
    output accumulator as m grows; it saves q, k, v, the output and LSE = m + log l. Backward
    recomputes P = exp(S - LSE) block by block: dV += Pᵀ dO, dP = dO Vᵀ, dS = P (dP - D) with
    D = rowsum(dO ⊙ O), dQ += dS K / √d, dK += dSᵀ Q / √d.
    """

    @staticmethod
    def forward(ctx, q, k, v, block):
        h, s, d = q.shape
        scale = 1.0 / math.sqrt(d)
        out = torch.empty_like(q)
        lse = torch.empty(h, s, dtype=q.dtype)
        for qs in range(0, s, block):
            qe = min(qs + block, s)
            qb = q[:, qs:qe]
            m = torch.full((h, qe - qs, 1), float("-inf"), dtype=q.dtype)
            l = torch.zeros(h, qe - qs, 1, dtype=q.dtype)
            acc = torch.zeros(h, qe - qs, d, dtype=q.dtype)
            for ks, ke, crosses in _key_blocks(qs, qe, block):
                sc = (qb @ k[:, ks:ke].transpose(1, 2)) * scale
                if crosses:
                    sc.masked_fill_(_diag_mask(qs, qe, ks, ke), float("-inf"))
                # Every row has at least key 0 in the first block, so m is finite after it.
                m_new = torch.maximum(m, sc.amax(-1, keepdim=True))
                p = torch.exp(sc - m_new)
                alpha = torch.exp(m - m_new)
                l = l * alpha + p.sum(-1, keepdim=True)
                acc = acc * alpha + p @ v[:, ks:ke]
                m = m_new
            out[:, qs:qe] = acc / l
            lse[:, qs:qe] = (m + torch.log(l)).squeeze(-1)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.block = block
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        block = ctx.block
        s, d = q.shape[1], q.shape[2]
        scale = 1.0 / math.sqrt(d)
        dout = dout.contiguous()
        dsum = (dout * out).sum(-1, keepdim=True)  # D: [H, S, 1]
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for qs in range(0, s, block):
            qe = min(qs + block, s)
            qb, dob = q[:, qs:qe], dout[:, qs:qe]
            lb, db = lse[:, qs:qe, None], dsum[:, qs:qe]
            for ks, ke, crosses in _key_blocks(qs, qe, block):
                kb, vb = k[:, ks:ke], v[:, ks:ke]
                sc = (qb @ kb.transpose(1, 2)) * scale
                if crosses:
                    sc.masked_fill_(_diag_mask(qs, qe, ks, ke), float("-inf"))
                p = torch.exp(sc - lb)
                dv[:, ks:ke] += p.transpose(1, 2) @ dob
                ds = p * (dob @ vb.transpose(1, 2) - db)
                dq[:, qs:qe] += (ds @ kb) * scale
                dk[:, ks:ke] += (ds.transpose(1, 2) @ qb) * scale
        return dq, dk, dv, None


class Block(torch.nn.Module):
    """One pre-norm decoder block; `attention(q, k, v)` maps [H, S, d] to [H, S, d], causal."""

    def __init__(self, c, attention):
        super().__init__()
        self.h, self.hkv, self.d = c["heads"], c["kv_heads"], c["dim"] // c["heads"]
        self.attention = attention
        dim = c["dim"]
        self.norm1, self.norm2 = RMSNorm(dim, c["norm_eps"]), RMSNorm(dim, c["norm_eps"])
        self.wq = torch.nn.Linear(dim, self.h * self.d, bias=False)
        self.wk = torch.nn.Linear(dim, self.hkv * self.d, bias=False)
        self.wv = torch.nn.Linear(dim, self.hkv * self.d, bias=False)
        self.wo = torch.nn.Linear(self.h * self.d, dim, bias=False)
        self.w_gate = torch.nn.Linear(dim, c["ffn_dim"], bias=False)
        self.w_up = torch.nn.Linear(dim, c["ffn_dim"], bias=False)
        self.w_down = torch.nn.Linear(c["ffn_dim"], dim, bias=False)

    def forward(self, x, cos, sin):
        s = x.shape[0]
        y = self.norm1(x)
        q = rope(self.wq(y).view(s, self.h, self.d), cos, sin)
        k = rope(self.wk(y).view(s, self.hkv, self.d), cos, sin)
        v = self.wv(y).view(s, self.hkv, self.d)
        # GQA: query head i reads KV head i // (H / Hkv); the repeat's backward sums the groups.
        rep = self.h // self.hkv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        q, k, v = (t.transpose(0, 1).contiguous() for t in (q, k, v))  # [H, S, d]
        att = self.attention(q, k, v)
        x = x + self.wo(att.transpose(0, 1).reshape(s, self.h * self.d))
        y = self.norm2(x)
        return x + self.w_down(F.silu(self.w_gate(y)) * self.w_up(y))


class Model(torch.nn.Module):
    """Embedding, blocks, final RMSNorm, LM head tied to the embedding; forward returns the mean cross-entropy."""

    def __init__(self, c, attention, dtype=torch.float32):
        super().__init__()
        self.c, self.dtype = c, dtype
        self.embed = torch.nn.Embedding(c["vocab"], c["dim"])
        self.blocks = torch.nn.ModuleList(Block(c, attention) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["dim"], c["norm_eps"])
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)
        self.to(dtype)

    def forward(self, tokens, labels):
        s = tokens.shape[0]
        d = self.c["dim"] // self.c["heads"]
        inv = self.c["rope_theta"] ** (-torch.arange(0, d, 2, dtype=self.dtype) / d)
        ang = torch.arange(s, dtype=self.dtype)[:, None] * inv[None, :]
        cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x, cos, sin)
        logits = self.norm(x) @ self.embed.weight.t()
        return F.cross_entropy(logits, labels)


def attention_fn(form, block):
    if form == "naive":
        return naive_attention
    return lambda q, k, v: ChunkedAttention.apply(q, k, v, block)


def step_times(c, form, block, seq_len, steps, seed, per_step=None):
    """Wall ms of each training step (forward, backward, clip, AdamW) at seq_len."""
    torch.manual_seed(seed)
    return timed_steps(Model(c, attention_fn(form, block)), 1e-3, c["vocab"], seq_len, steps, per_step)


# Relative agreement --check requires: float64 leaves room for the reordered sums (seen: ~1e-15).
CHECK_TOL = 1e-5


def check(c, seq_len, block, seed):
    """Loss and parameter gradients of chunked vs naive attention in float64 on the same weights and
    data; per-gradient error = max |chunked - naive| / max |naive|. Also torch's gradcheck of
    ChunkedAttention alone (analytic vs numeric Jacobian) at a tiny size with a ragged last block."""
    torch.manual_seed(seed)
    naive = Model(c, attention_fn("naive", block), torch.float64)
    chunked = Model(c, attention_fn("chunked", block), torch.float64)
    chunked.load_state_dict(naive.state_dict())
    data = torch.randint(0, c["vocab"] - 1, (seq_len + 1,))
    losses = []
    for m in (naive, chunked):
        loss = m(data[:-1], data[1:])
        loss.backward()
        losses.append(loss.item())
    worst, worst_name = 0.0, ""
    for (name, pn), pc in zip(naive.named_parameters(), chunked.parameters()):
        err = ((pc.grad - pn.grad).abs().max() / pn.grad.abs().max()).item()
        if err > worst:
            worst, worst_name = err, name
    q, k, v = (torch.randn(2, 11, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    gradcheck = torch.autograd.gradcheck(lambda a, b, e: ChunkedAttention.apply(a, b, e, 4), (q, k, v), raise_exception=False)
    loss_rel = abs(losses[1] - losses[0]) / abs(losses[0])
    return {"check": True, "ok": loss_rel <= CHECK_TOL and worst <= CHECK_TOL and gradcheck, "tolerance": CHECK_TOL,
            "seqLen": seq_len, "block": block, "model": c, "lossNaive": losses[0], "lossChunked": losses[1],
            "lossRelErr": loss_rel, "maxGradRelErr": worst, "worstParam": worst_name, "gradcheck": gradcheck}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attention", choices=["naive", "chunked"], default="chunked")
    ap.add_argument("--seq-len", type=int, help="tokens per step (default 4096; --check: 50)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--block", type=int, help="chunked: query and key block rows (default 256; --check: 16, so that there are several and a ragged last one)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--memory-gib", type=float, default=12, help="address-space cap, so that running out is an error, not the OOM killer (default 12)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout, {\"error\": ...} on failure")
    ap.add_argument("--check", action="store_true", help="compare chunked with naive in float64 (loss, gradients) and exit")
    for key, val in ISSUE_MODEL.items():
        ap.add_argument("--" + key.replace("_", "-"), type=type(val), default=val, help=f"model {key} (default {val})")
    a = ap.parse_args()
    c = {key: getattr(a, key) for key in ISSUE_MODEL}
    if a.seq_len is None:
        a.seq_len = 50 if a.check else 4096
    if a.block is None:
        # 256: a block pair's scores for 8 heads are 2 MiB, one core's L2 on this machine; in a
        # sweep of 64-1024 at seqLen 4096 (busy shared machine) 128-256 were fastest, 1024 3x slower.
        a.block = 16 if a.check else 256
    try:
        if c["dim"] % c["heads"] or c["heads"] % c["kv_heads"] or (c["dim"] // c["heads"]) % 2:
            raise ValueError(f"dim {c['dim']} / heads {c['heads']} must be an even integer and heads a multiple of kv-heads {c['kv_heads']}")
        if a.seq_len < 1 or a.block < 1 or a.steps < 1 or a.threads < 1:
            raise ValueError("--seq-len, --block, --steps and --threads must be positive")
        torch.set_num_threads(a.threads)
        blas = set_blas_threads(a.threads)
        resource.setrlimit(resource.RLIMIT_AS, (int(a.memory_gib * 2**30), resource.getrlimit(resource.RLIMIT_AS)[1]))
        if a.check:
            report = check(c, a.seq_len, a.block, a.seed)
        else:
            log = None if a.json else (lambda i, ms, loss: print(f"step {i + 1}: {ms:.0f} ms, loss {loss:.4f}", file=sys.stderr))
            ms = step_times(c, a.attention, a.block, a.seq_len, a.steps, a.seed, log)
            report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "attention": a.attention,
                      "blas": blas, "seqLen": a.seq_len, "block": a.block, "model": c, "stepMs": ms}
    except (RuntimeError, MemoryError, ValueError) as e:  # allocation failure under the cap, bad dims
        msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no message'}"
        print(json.dumps({"error": msg, "torch": torch.__version__}) if a.json else msg, file=sys.stdout if a.json else sys.stderr)
        sys.exit(1)
    print(json.dumps(report) if a.json else json.dumps(report, indent=2))
    if a.check and not report["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

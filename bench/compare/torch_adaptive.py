#!/usr/bin/env python3
"""PyTorch peer for rnnlm's adaptive-softmax head: training and scoring throughput of a tanh RNN
language model with a full softmax or nn.AdaptiveLogSoftmaxWithLoss output layer, float32 on
the CPU.

    python torch_adaptive.py --vocab 100000 --head adaptive --threads 2
    python torch_adaptive.py --vocab 10000,100000 --head full,adaptive --threads 2 --json

The model: nn.Embedding(V, D) -> nn.RNN(D, H, tanh, batch_first) -> the head, PyTorch's default
init (only speed matters):
- `--head full`: nn.Linear(H, V); training loss F.cross_entropy (mean); scoring gathers the
  target's entry of F.log_softmax(logits).
- `--head adaptive`: nn.AdaptiveLogSoftmaxWithLoss(H, V, cutoffs, div_value, head_bias), the
  cutoffs of --cutoffs that are < V (at least one must remain); training loss `crit(h, y).loss`
  (a mean); scoring `crit(h, y).output` (the target's log-prob; the full `log_prob` is not
  computed).

Data: synthetic Zipf ids (p(k) proportional to 1 / (k + 1)**--zipf, so id 0 is the most frequent,
as the adaptive softmax expects), drawn with numpy's default_rng(--seed), laid out as N
contiguous streams; batch b is each stream's tokens b*T .. b*T + T - 1 with the next token as
target, (--warmup + --steps) distinct batches, the hidden state carried between batches (and
detached while training), as in truncated BPTT.

A training step (timed as a whole, batch slicing included) = zero_grad, forward, loss,
backward, torch.optim.SGD step (lr --lr, no momentum), in training mode. A scoring step =
forward and the targets' log-probs (summed into a float) under torch.no_grad() in eval mode.
Each is run --warmup times untimed, then --steps times timed; tokens/s = N*T / the median step
time. --threads K sets torch.set_num_threads(K) and torch.set_num_interop_threads(1).

Output: one line per measurement (each --vocab x --head combination), e.g.
  torch head=adaptive V=100000 D=256 H=256 N=64 T=35 threads=2 cutoffs=2000,10000,50000 div=4
  head_bias=0 train_tok_s=... score_tok_s=...
or, with --json, one JSON object per measurement, one a line.

Before each measurement the peak memory is estimated (parameters, gradients, the output
layer's activations); one that would exceed 90% of MemAvailable is skipped with a message
(--force runs it anyway). The full head at V = 800000 and N*T = 2240 has 7.2 GB of logits per
copy (~23 GiB estimated for training).
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time


def int_list(s):
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int_list, default=[10000],
                   help="V, or a comma list (e.g. 10000,100000,800000)")
    p.add_argument("--head", default="adaptive",
                   help="full | adaptive, or a comma list (default adaptive)")
    p.add_argument("--cutoffs", type=int_list, default=[2000, 10000, 50000],
                   help="adaptive cutoffs (default 2000,10000,50000); those >= V are dropped")
    p.add_argument("--div-value", type=float, default=4.0)
    p.add_argument("--head-bias", action="store_true", help="a bias on the adaptive head")
    p.add_argument("--wordvec", type=int, default=256, help="D (default 256)")
    p.add_argument("--hidden", type=int, default=256, help="H (default 256)")
    p.add_argument("--batch", type=int, default=64, help="N (default 64)")
    p.add_argument("--time", type=int, default=35, help="T (default 35)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--mode", choices=["both", "train", "score"], default="both")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent (default 1.0)")
    p.add_argument("--sparse-embed", action="store_true",
                   help="nn.Embedding(sparse=True) (default: dense gradient, PyTorch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="run even if memory looks short")
    p.add_argument("--json", action="store_true", help="one JSON object per measurement")
    a = p.parse_args(argv)
    a.head = [h.strip() for h in a.head.split(",") if h.strip()]
    if not a.head or any(h not in ("full", "adaptive") for h in a.head):
        p.error("--head takes full, adaptive or a comma list of them")
    if min(a.vocab + [a.wordvec, a.hidden, a.batch, a.time, a.threads, a.steps]) < 1 \
            or a.warmup < 0:
        p.error("sizes, --threads and --steps must be >= 1, --warmup >= 0")
    return a


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_rnnlm import config_summary, set_threads  # noqa: E402


class Lm(nn.Module):
    def __init__(self, V, D, H, head, cutoffs, div_value, head_bias, sparse_embed):
        super().__init__()
        self.H = H
        self.head_kind = head
        self.embed = nn.Embedding(V, D, sparse=sparse_embed)
        self.rnn = nn.RNN(D, H, nonlinearity="tanh", batch_first=True)
        if head == "full":
            self.out = nn.Linear(H, V)
        else:
            self.out = nn.AdaptiveLogSoftmaxWithLoss(H, V, cutoffs, div_value=div_value,
                                                     head_bias=head_bias)

    def hidden(self, x, h):
        out, h = self.rnn(self.embed(x), h)
        return out.reshape(-1, self.H), h

    def loss(self, x, y, h):
        """Mean cross-entropy over the batch's N*T targets, and the new hidden state."""
        hid, h = self.hidden(x, h)
        if self.head_kind == "full":
            return F.cross_entropy(self.out(hid), y.reshape(-1)), h
        return self.out(hid, y.reshape(-1)).loss, h

    def target_logprobs(self, x, y, h):
        """log p(target) of each of the N*T positions, and the new hidden state."""
        hid, h = self.hidden(x, h)
        y = y.reshape(-1)
        if self.head_kind == "full":
            lp = F.log_softmax(self.out(hid), dim=-1)
            return lp.gather(1, y.view(-1, 1)).view(-1), h
        return self.out(hid, y).output, h


def zipf_streams(V, N, length, exponent, seed):
    """[N, length] int64 ids, Zipf-distributed over 0..V-1 (id 0 the most frequent)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, V + 1, dtype=np.float64) ** exponent
    p /= p.sum()
    ids = rng.choice(V, size=N * length, p=p)
    return torch.from_numpy(ids.astype(np.int64).reshape(N, length))


def head_sizes(V, H, cutoffs, div_value):
    """(parameters of the output layer, largest per-row activation width) for the estimate."""
    bounds = cutoffs + [V]
    params = (bounds[0] + len(cutoffs)) * H
    for i in range(len(cutoffs)):
        p = int(H // (div_value ** (i + 1)))
        params += H * p + p * (bounds[i + 1] - bounds[i])
    width = bounds[0] + len(cutoffs) + max(b - a for a, b in zip(bounds, bounds[1:]))
    return params, width


def mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimate_bytes(args, V, head, cutoffs):
    """Rough peak: parameters (+ gradients when training), 3 (train) or 2 (score) copies of the
    output layer's [N*T, width] activations, the RNN's activations."""
    D, H, N, T = args.wordvec, args.hidden, args.batch, args.time
    if head == "full":
        out_params, width = H * V + V, V
    else:
        out_params, width = head_sizes(V, H, cutoffs, args.div_value)
    params = V * D + D * H + H * H + 2 * H + out_params
    train = args.mode in ("both", "train")
    acts = N * T * width * (3 if train else 2) + 4 * N * T * (D + H)
    return 4 * (params * (2 if train else 1) + acts)


def median_tok_s(step, warmup, steps, tokens):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return tokens / med, med


def measure(args, V, head):
    D, H, N, T = args.wordvec, args.hidden, args.batch, args.time
    cutoffs = [c for c in args.cutoffs if 0 < c < V] if head == "adaptive" else []
    if head == "adaptive" and not cutoffs:
        raise SystemExit(f"--head adaptive at V={V}: no cutoff of {args.cutoffs} is below V")
    res = {
        "system": "torch", "head": head, "vocab": V, "wordvec": D, "hidden": H,
        "batch": N, "time": T, "cutoffs": cutoffs,
        "div_value": args.div_value if head == "adaptive" else None,
        "head_bias": bool(args.head_bias) if head == "adaptive" else None,
        "sparse_embed": args.sparse_embed, "zipf": args.zipf, "lr": args.lr,
        "steps": args.steps, "warmup": args.warmup,
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
    }
    need, avail = estimate_bytes(args, V, head, cutoffs), mem_available()
    res["estimated_bytes"] = need
    if avail is not None and need > 0.9 * avail and not args.force:
        res["skipped"] = (f"needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available "
                          "(--force to run anyway)")
        return res

    torch.manual_seed(args.seed)
    batches = args.warmup + args.steps
    data = zipf_streams(V, N, batches * T + 1, args.zipf, args.seed)
    model = Lm(V, D, H, head, cutoffs, args.div_value, args.head_bias, args.sparse_embed)
    assert all(p.dtype == torch.float32 for p in model.parameters())

    def batch(b):
        b %= batches
        return data[:, b * T:(b + 1) * T], data[:, b * T + 1:(b + 1) * T + 1]

    if args.mode in ("both", "train"):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)
        state = {"b": 0, "h": None, "losses": []}

        def train_step():
            x, y = batch(state["b"])
            state["b"] += 1
            opt.zero_grad(set_to_none=True)
            loss, h = model.loss(x, y, state["h"])
            loss.backward()
            opt.step()
            state["h"] = h.detach()
            state["losses"].append(loss.item())

        res["train_tok_s"], res["train_step_s"] = median_tok_s(train_step, args.warmup,
                                                               args.steps, N * T)
        res["first_loss"], res["last_loss"] = state["losses"][0], state["losses"][-1]
        del opt
    if args.mode in ("both", "score"):
        model.eval()
        state = {"b": 0, "h": None, "log_prob": 0.0}

        def score_step():
            x, y = batch(state["b"])
            state["b"] += 1
            with torch.no_grad():
                lp, state["h"] = model.target_logprobs(x, y, state["h"])
                state["log_prob"] += float(lp.sum())

        res["score_tok_s"], res["score_step_s"] = median_tok_s(score_step, args.warmup,
                                                               args.steps, N * T)
        res["score_log_prob"] = state["log_prob"]
    del model
    gc.collect()
    return res


def line(res):
    f = [f"head={res['head']}", f"V={res['vocab']}", f"D={res['wordvec']}", f"H={res['hidden']}",
         f"N={res['batch']}", f"T={res['time']}", f"threads={res['threads']}"]
    if res["head"] == "adaptive":
        f += [f"cutoffs={','.join(map(str, res['cutoffs']))}", f"div={res['div_value']:g}",
              f"head_bias={int(res['head_bias'])}"]
    if res["sparse_embed"]:
        f.append("sparse_embed=1")
    if "skipped" in res:
        f.append("skipped=" + res["skipped"].replace(" ", "_"))
    for k in ("train_tok_s", "score_tok_s"):
        if k in res:
            f.append(f"{k}={res[k]:.0f}")
    if "last_loss" in res:
        f.append(f"loss={res['first_loss']:.4f}->{res['last_loss']:.4f}")
    return "torch " + " ".join(f)


def main(args):
    set_threads(args.threads)
    config = config_summary()
    for V in args.vocab:
        for head in args.head:
            res = measure(args, V, head)
            res["config"] = config
            print(json.dumps(res) if args.json else line(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))

#!/usr/bin/env python3
"""Scoring peer for `rnnlm score`: the log-probability of every line of a text file under a
word_language_model-style model (torch_rnnlm.RNNModel), in padded batches.

    python torch_score.py FILE --cell lstm --vocab 10000 --wordvec 200 --hidden 200 --layers 2 \
        --threads 2 --batch 32 --json

The weights are random (torch.manual_seed(--seed), RNNModel's init): only the speed matters.
The vocabulary is built from FILE (<eos> first, then the words in order of first appearance);
the output layer has --vocab rows (default: that vocabulary's size), and words beyond --vocab
share its last id. Each line is one stream from a zero state: inputs <eos> w1 .. wn, targets
w1 .. wn <eos>, so a line of n words is n + 1 tokens, as `rnnlm score` counts them. Lines are
sorted by length (longest first) and scored --batch at a time, padded to the batch's longest
line; padding sits after each line's end, so it never changes a line's result (the model is
causal) and is masked out of the sums. Everything runs under torch.inference_mode() in
eval mode (no dropout).

Timed: reading and encoding FILE, batching, the forward passes and the per-line sums, after
one small untimed forward pass (thread pool warm-up). Not timed: importing torch, building
the vocabulary and the model. Prints tokens/s (with --json, one object:
{"tokens_per_sec": ..., "tokens": ..., "lines": ..., "seconds": ..., "log_prob": ...}).
"""

import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="text to score, one sentence per line")
    p.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="lstm")
    p.add_argument("--vocab", type=int, default=None,
                   help="output-layer size V (default: the size of FILE's vocabulary)")
    p.add_argument("--wordvec", type=int, default=100)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--tie", action="store_true")
    p.add_argument("--batch", type=int, default=32, help="lines per padded batch (default 32)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    if a.batch < 1 or a.threads < 1 or a.layers < 1 or (a.vocab is not None and a.vocab < 1):
        p.error("--batch, --threads, --layers and --vocab must be >= 1")
    return a


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(ARGS.threads)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_rnnlm import RNNModel, set_threads  # noqa: E402

EOS = "<eos>"


def build_vocab(path):
    ids = {EOS: 0}
    with open(path, encoding="utf-8") as f:
        for line in f:
            for w in line.split():
                if w not in ids:
                    ids[w] = len(ids)
    return ids


def score_file(model, path, ids, batch):
    """Per-line log-probabilities (natural log) and the number of tokens scored."""
    V = model.ntoken
    last = V - 1
    with open(path, encoding="utf-8") as f:
        lines = [[min(ids.get(w, last), last) for w in line.split()] for line in f]
    order = sorted(range(len(lines)), key=lambda i: -len(lines[i]))
    log_probs = [0.0] * len(lines)
    tokens = 0
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            L = len(lines[rows[0]]) + 1
            inp = torch.zeros((L, len(rows)), dtype=torch.long)
            tgt = torch.full((L, len(rows)), -100, dtype=torch.long)
            for j, i in enumerate(rows):
                words = torch.tensor(lines[i], dtype=torch.long)
                n = len(lines[i])
                inp[0, j] = 0  # <eos>
                inp[1:n + 1, j] = words
                tgt[:n, j] = words
                tgt[n, j] = 0  # <eos>
                tokens += n + 1
            logits, _ = model(inp)  # [L, B, V], from a zero state
            nll = F.cross_entropy(logits.view(-1, V), tgt.view(-1), ignore_index=-100,
                                  reduction="none").view(L, len(rows))
            for j, s in enumerate((-nll.sum(0)).tolist()):
                log_probs[rows[j]] = s
    return log_probs, tokens


def main(args):
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    ids = build_vocab(args.file)
    V = args.vocab or len(ids)
    model = RNNModel(args.cell, V, args.wordvec, args.hidden, args.layers, 0.0, args.tie)
    model.eval()
    with torch.inference_mode():  # warm-up: one small batch
        model(torch.zeros((8, min(args.batch, 4)), dtype=torch.long))
    t = time.perf_counter()
    log_probs, tokens = score_file(model, args.file, ids, args.batch)
    seconds = time.perf_counter() - t
    res = {
        "system": "torch_score",
        "tokens_per_sec": tokens / seconds if seconds > 0 else None,
        "tokens": tokens,
        "lines": len(log_probs),
        "seconds": seconds,
        "log_prob": sum(log_probs),
        "text_vocab": len(ids),
        "cell": args.cell, "vocab": V, "wordvec": args.wordvec, "hidden": args.hidden,
        "layers": args.layers, "tied": args.tie, "batch": args.batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(f"torch {res['torch']} ({res['threads']} threads): {tokens} tokens in "
              f"{len(log_probs)} lines, {seconds:.3f} s: {res['tokens_per_sec']:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))

#!/usr/bin/env python3
"""Idiomatic PyTorch peers of the models measured here, float32 on the CPU.

- The default (--cell rnn, 1 layer, no dropout, untied): the book's SimpleRnnlm (DLfS2
  chapter 5): nn.Embedding -> nn.RNN(tanh, batch_first) -> nn.Linear -> F.cross_entropy,
  torch.optim.SGD, the hidden state carried and detached between batches (truncated BPTT),
  the book's init scales and batching.
- Anything else (--cell lstm|gru, --layers, --dropout, --tie): RNNModel, the structure of
  PyTorch's examples/word_language_model: nn.Embedding -> nn.Dropout -> nn.LSTM / nn.GRU /
  nn.RNN (num_layers, dropout between layers) -> nn.Dropout -> nn.Linear (its weight is the
  embedding's with --tie), sequence-first [T, N] batches, its init (uniform +-0.1 for the
  embedding and the decoder, PyTorch's default for the recurrent layers), F.cross_entropy
  (mean), torch.optim.SGD, the hidden state (a tuple (h, c) for an LSTM) carried and
  detached between batches, training mode (dropout on where --dropout > 0). The book's
  batching, as for the default model.

    python torch_rnnlm.py --vocab 10000 --wordvec 100 --hidden 100 --batch 20 --time 35 \
        --threads 2 --seconds 5 --json
    python torch_rnnlm.py --cell lstm --layers 2 --wordvec 650 --hidden 650 --dropout 0.5 --tie \
        --threads 2 --seconds 5 --json
    python torch_rnnlm.py --check
"""

import argparse
import json
import math
import os
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--wordvec", type=int, default=100)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--time", type=int, default=35)
    p.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="rnn")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.0,
                   help="nn.Dropout after the embedding and the last layer, and between layers")
    p.add_argument("--tie", action="store_true", help="decoder weight = embedding weight (D == H)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0,
                   help="total measuring time: 20%% warm-up, the rest split into --windows windows")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--check", action="store_true",
                   help="loss/gradients against the numpy model and a tiny training run, then exit")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    # Same variables as the numpy peer (torch.set_num_threads below is what rules torch).
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


class SimpleRnnlm(nn.Module):
    def __init__(self, vocab_size, wordvec_size, hidden_size):
        super().__init__()
        V, D, H = vocab_size, wordvec_size, hidden_size
        self.embed = nn.Embedding(V, D)
        self.rnn = nn.RNN(D, H, nonlinearity="tanh", batch_first=True)
        self.affine = nn.Linear(H, V)
        self.h = None
        self.init_book()

    @torch.no_grad()
    def init_book(self):
        """The book's scales: E ~ N(0,1)/100, Wx ~ /sqrt(D), Wh ~ /sqrt(H), W ~ /sqrt(H), b = 0."""
        V, D = self.embed.weight.shape
        H = self.rnn.hidden_size
        self.embed.weight.copy_(torch.randn(V, D) / 100)
        self.rnn.weight_ih_l0.copy_(torch.randn(H, D) / math.sqrt(D))  # Wx^T
        self.rnn.weight_hh_l0.copy_(torch.randn(H, H) / math.sqrt(H))  # Wh^T
        self.rnn.bias_ih_l0.zero_()
        self.rnn.bias_hh_l0.zero_()  # b = b_ih + b_hh = 0
        self.affine.weight.copy_(torch.randn(V, H) / math.sqrt(H))  # W^T
        self.affine.bias.zero_()

    @torch.no_grad()
    def load_book(self, embed_W, Wx, Wh, b, affine_W, affine_b):
        """Copies book-layout numpy weights in (for the cross-check)."""
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        self.embed.weight.copy_(t(embed_W))
        self.rnn.weight_ih_l0.copy_(t(Wx.T))
        self.rnn.weight_hh_l0.copy_(t(Wh.T))
        self.rnn.bias_ih_l0.copy_(t(b))
        self.rnn.bias_hh_l0.zero_()
        self.affine.weight.copy_(t(affine_W.T))
        self.affine.bias.copy_(t(affine_b))

    def forward(self, xs, ts):
        x = self.embed(xs)                       # [N, T, D]
        hs, h = self.rnn(x, self.h)              # [N, T, H], [1, N, H]
        self.h = h.detach()                      # carried, no gradient across batches
        logits = self.affine(hs)                 # [N, T, V]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ts.reshape(-1))

    def reset_state(self):
        self.h = None


class RNNModel(nn.Module):
    """word_language_model's RNNModel: encoder -> drop -> rnn -> drop -> decoder.

    Sequence-first: forward takes ids [T, N] and the carried hidden state (None at the start),
    returns logits [T, N, V] and the new hidden state (not detached)."""

    def __init__(self, cell, ntoken, ninp, nhid, nlayers, dropout=0.0, tie_weights=False):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if cell == "lstm":
            self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        elif cell == "gru":
            self.rnn = nn.GRU(ninp, nhid, nlayers, dropout=dropout)
        else:
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity="tanh", dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError("when using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.cell, self.nhid, self.nlayers = cell, nhid, nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden=None):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        return decoded, hidden

    @torch.no_grad()
    def load_book(self, embed_W, lstm_params, affine_W, affine_b):
        """Copies the numpy BetterRnnlm's / Rnnlm's weights in (for the cross-check): the
        book's gate order f, g, i, o becomes PyTorch's i, f, g, o, its one bias b_ih (b_hh = 0),
        and its [in, out] matrices are transposed."""
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        H = self.nhid

        def ifgo(a):  # along the last axis of the book's layout
            f, g, i, o = (a[..., k * H:(k + 1) * H] for k in range(4))
            return np.concatenate([i, f, g, o], axis=-1)

        self.encoder.weight.copy_(t(embed_W))
        for l, (Wx, Wh, b) in enumerate(lstm_params):
            getattr(self.rnn, f"weight_ih_l{l}").copy_(t(ifgo(Wx).T))
            getattr(self.rnn, f"weight_hh_l{l}").copy_(t(ifgo(Wh).T))
            getattr(self.rnn, f"bias_ih_l{l}").copy_(t(ifgo(b)))
            getattr(self.rnn, f"bias_hh_l{l}").zero_()
        if self.decoder.weight is not self.encoder.weight:
            self.decoder.weight.copy_(t(affine_W.T))
        self.decoder.bias.copy_(t(affine_b))


def repackage_hidden(h):
    """Wraps hidden states in new Tensors, to detach them from their history."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


class WordLmTrainer:
    """One training step of RNNModel on [T, N] batches, the hidden state carried and detached."""

    def __init__(self, model, lr):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        self.hidden = None
        model.train()

    def step(self, xs, ts):
        if self.hidden is not None:
            self.hidden = repackage_hidden(self.hidden)
        output, self.hidden = self.model(xs, self.hidden)
        loss = F.cross_entropy(output.view(-1, self.model.ntoken), ts.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss


class BookBatches:
    """The book's batching: xs = corpus[:-1], ts = corpus[1:], row i reads
    (i*jump + time_idx) % len(xs), time_idx += 1 per time step (gathered with one index op).
    With time_major the batches come as [T, N] (word_language_model's layout), else [N, T]."""

    def __init__(self, corpus, batch_size, time_size, time_major=False):
        self.xs = torch.as_tensor(corpus[:-1], dtype=torch.long)
        self.ts = torch.as_tensor(corpus[1:], dtype=torch.long)
        self.data_size = len(self.xs)
        self.time_size = time_size
        jump = self.data_size // batch_size
        self.offsets = torch.arange(batch_size).unsqueeze(1) * jump      # [N, 1]
        self.steps = torch.arange(time_size).unsqueeze(0)                 # [1, T]
        if time_major:
            self.offsets, self.steps = self.offsets.T, self.steps.T       # [1, N], [T, 1]
        self.time_idx = 0

    def next_batch(self):
        pos = (self.offsets + self.steps + self.time_idx) % self.data_size
        self.time_idx += self.time_size
        return self.xs[pos], self.ts[pos]


def set_threads(p):
    torch.set_num_threads(p)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started
        pass


def median_rate(step, tokens_per_step, seconds, windows):
    """Warm-up for 20% of `seconds`, then `windows` windows of whole steps; median tokens/s."""
    warmup = 0.2 * seconds
    window = 0.8 * seconds / windows
    start = time.perf_counter()
    step()  # at least one untimed step
    while time.perf_counter() - start < warmup:
        step()
    rates, steps = [], 0
    for _ in range(windows):
        w = time.perf_counter()
        k = 0
        while k == 0 or time.perf_counter() - w < window:
            step()
            k += 1
        rates.append(k * tokens_per_step / (time.perf_counter() - w))
        steps += k
    return statistics.median(rates), rates, steps


def config_summary():
    """MKL / oneDNN / OpenMP / CPU-capability lines of torch.__config__.show()."""
    keep = ("Math Kernel Library", "MKL-DNN", "oneDNN", "OpenMP", "CPU capability")
    out = []
    for line in torch.__config__.show().splitlines():
        line = line.strip().lstrip("- ").strip()
        if any(k in line for k in keep):
            out.append(line.split(" (Git Hash")[0].replace(" for Intel(R) 64 architecture applications", ""))
    return "; ".join(out)


def is_simple(args):
    """The book's SimpleRnnlm (configs A-D) rather than word_language_model's RNNModel."""
    return args.cell == "rnn" and args.layers == 1 and args.dropout == 0 and not args.tie


def bench(args):
    V, D, H, N, T = args.vocab, args.wordvec, args.hidden, args.batch, args.time
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    # A synthetic corpus long enough for 64 distinct batches (as `rnnlm bench`).
    rng = np.random.RandomState(args.seed)
    corpus = rng.randint(0, V, size=64 * N * T + 1)
    if is_simple(args):
        model = SimpleRnnlm(V, D, H)
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
        batches = BookBatches(corpus, N, T)

        def step():
            xs, ts = batches.next_batch()
            loss = model(xs, ts)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    else:
        model = RNNModel(args.cell, V, D, H, args.layers, args.dropout, args.tie)
        trainer = WordLmTrainer(model, args.lr)
        batches = BookBatches(corpus, N, T, time_major=True)

        def step():
            trainer.step(*batches.next_batch())
    assert all(p.dtype == torch.float32 for p in model.parameters())

    tps, rates, steps = median_rate(step, N * T, args.seconds, args.windows)
    return {
        "system": "torch",
        "model": type(model).__name__,
        "cell": args.cell, "layers": args.layers, "tied": args.tie, "dropout": args.dropout,
        "vocab": V, "wordvec": D, "hidden": H, "batch": N, "time": T,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "tokens_per_sec": tps,
        "window_tokens_per_sec": rates,
        "steps": steps,
        "torch": torch.__version__,
        "config": config_summary(),
    }


# ---------------------------------------------------------------- checks

def cross_check(V=7, D=5, H=4, N=3, T=4, batches=3):
    """Same weights and data as the numpy peer, float64: loss and every gradient must agree,
    over several batches (so the carried, detached state is covered too)."""
    sys.path.insert(0, HERE)
    import numpy_rnnlm as ref

    rng = np.random.RandomState(3)
    npm = ref.SimpleRnnlm(V, D, H, dtype="d", rng=rng)
    for p in npm.params:
        p += 0.1 * rng.randn(*p.shape)  # non-zero biases too
    tm = SimpleRnnlm(V, D, H).double()
    tm.load_book(*npm.params)
    worst = 0.0
    for _ in range(batches):
        xs = rng.randint(0, V, size=(N, T))
        ts = rng.randint(0, V, size=(N, T))
        l_np = npm.forward(xs, ts)
        npm.backward()
        tm.zero_grad()
        l_t = tm(torch.from_numpy(xs), torch.from_numpy(ts))
        l_t.backward()
        worst = max(worst, abs(l_np - l_t.item()))
        pairs = [
            (npm.grads[0], tm.embed.weight.grad),
            (npm.grads[1], tm.rnn.weight_ih_l0.grad.T),
            (npm.grads[2], tm.rnn.weight_hh_l0.grad.T),
            (npm.grads[3], tm.rnn.bias_ih_l0.grad),
            (npm.grads[3], tm.rnn.bias_hh_l0.grad),
            (npm.grads[4], tm.affine.weight.grad.T),
            (npm.grads[5], tm.affine.bias.grad),
        ]
        for g_np, g_t in pairs:
            worst = max(worst, float(np.max(np.abs(g_np - g_t.numpy()))))
    return worst


def cross_check_lstm(layers, tied, V=7, D=4, H=4, N=3, T=4, batches=3):
    """RNNModel(lstm) against the numpy Rnnlm / BetterRnnlm (no dropout), float64, same
    weights and data over several stateful batches: loss and every gradient must agree."""
    sys.path.insert(0, HERE)
    import numpy_rnnlm as ref

    rng = np.random.RandomState(4)
    npm = ref.make_model("lstm", V, D, H, layers=layers, dropout=0.0, tied=tied, dtype="d",
                         rng=rng)
    for p in npm.params:
        if p.base is None:
            p += 0.1 * rng.randn(*p.shape)  # non-zero biases too
    lstm_params = [layer.params for layer in npm.lstm_layers]
    affine = npm.layers[-1].params
    tm = RNNModel("lstm", V, D, H, layers, 0.0, tied).double()
    tm.load_book(npm.params[0], lstm_params, affine[0], affine[1])
    hidden = None
    worst = 0.0
    for _ in range(batches):
        xs = rng.randint(0, V, size=(N, T))
        ts = rng.randint(0, V, size=(N, T))
        l_np = npm.forward(xs, ts)
        npm.backward()
        tm.zero_grad()
        if hidden is not None:
            hidden = repackage_hidden(hidden)
        out, hidden = tm(torch.from_numpy(xs.T.copy()), hidden)
        l_t = F.cross_entropy(out.reshape(-1, V), torch.from_numpy(ts.T.reshape(-1)))
        l_t.backward()
        worst = max(worst, abs(l_np - l_t.item()))

        def ifgo(a):
            f, g, i, o = (a[..., k * H:(k + 1) * H] for k in range(4))
            return np.concatenate([i, f, g, o], axis=-1)

        g_embed = npm.grads[0] + (npm.layers[-1].grads[0].T if tied else 0)
        pairs = [(g_embed, tm.encoder.weight.grad)]
        for l, layer in enumerate(npm.lstm_layers):
            dWx, dWh, db = layer.grads
            pairs += [
                (ifgo(dWx), getattr(tm.rnn, f"weight_ih_l{l}").grad.T),
                (ifgo(dWh), getattr(tm.rnn, f"weight_hh_l{l}").grad.T),
                (ifgo(db), getattr(tm.rnn, f"bias_ih_l{l}").grad),
                (ifgo(db), getattr(tm.rnn, f"bias_hh_l{l}").grad),
            ]
        if not tied:
            pairs.append((npm.layers[-1].grads[0], tm.decoder.weight.grad.T))
        pairs.append((npm.layers[-1].grads[1], tm.decoder.bias.grad))
        for g_np, g_t in pairs:
            worst = max(worst, float(np.max(np.abs(g_np - g_t.numpy()))))
    return worst


def train_check_wordlm(cell, layers, dropout, tied, V=10, D=16, H=16, N=4, T=5, steps=300,
                       lr=5.0, seed=0):
    """RNNModel's loss at init ~ ln(V), then falls on a tiny repeated corpus (dropout on)."""
    torch.manual_seed(seed)
    model = RNNModel(cell, V, D, H, layers, dropout, tied)
    trainer = WordLmTrainer(model, lr)
    batches = BookBatches(np.tile(np.arange(V), 20), N, T, time_major=True)
    return [trainer.step(*batches.next_batch()).item() for _ in range(steps)]


def train_check(V=10, D=16, H=16, N=4, T=5, steps=300, lr=0.1, seed=0):
    """Loss at init ~ ln(V), then falls on a tiny repeated corpus. Returns the losses."""
    torch.manual_seed(seed)
    model = SimpleRnnlm(V, D, H)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    batches = BookBatches(np.tile(np.arange(V), 20), N, T)
    losses = []
    for _ in range(steps):
        xs, ts = batches.next_batch()
        loss = model(xs, ts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def check():
    set_threads(1)
    ok = True
    print(f"torch {torch.__version__} SimpleRnnlm check")
    worst = cross_check()
    good = worst < 1e-10
    ok &= good
    print(f"  vs numpy peer (float64, same weights, 3 stateful batches): max abs diff of loss "
          f"and gradients {worst:.2e} -> {'ok' if good else 'FAIL'}")
    V = 10
    losses = train_check(V=V)
    first, last = losses[0], statistics.mean(losses[-10:])
    good = abs(first - math.log(V)) < 0.05 and last < 0.5 * first
    ok &= good
    print(f"  loss at init {first:.4f} (ln V = {math.log(V):.4f}), mean of last 10 of "
          f"{len(losses)} steps {last:.4f} -> {'ok' if good else 'FAIL'}")
    print("RNNModel (word_language_model structure) check")
    for layers, tied in ((1, False), (2, False), (2, True)):
        worst = cross_check_lstm(layers, tied)
        good = worst < 1e-10
        ok &= good
        print(f"  lstm, {layers} layer(s), {'tied' if tied else 'untied'}, vs the numpy "
              f"{'Rnnlm' if layers == 1 else 'BetterRnnlm'} (float64, same weights, no dropout, "
              f"3 stateful batches): max abs diff {worst:.2e} -> {'ok' if good else 'FAIL'}")
    # Dropout 0.2 here: at H = 16, BetterRnnlm's 0.5 leaves too little to learn in 300 steps.
    # No clipping: the LSTMs learn at lr 5, where the GRU diverges (it learns at lr 1).
    for cell, layers, dropout, tied, lr in (("lstm", 2, 0.2, True, 5.0),
                                            ("gru", 2, 0.0, False, 1.0),
                                            ("lstm", 1, 0.0, False, 5.0)):
        losses = train_check_wordlm(cell, layers, dropout, tied, V=V, lr=lr)
        first, last = losses[0], statistics.mean(losses[-10:])
        good = abs(first - math.log(V)) < 0.1 and last < 0.5 * first
        ok &= good
        print(f"  {cell}, {layers} layer(s), dropout {dropout:g}, {'tied' if tied else 'untied'}: "
              f"loss at init {first:.4f}, mean of last 10 of {len(losses)} steps {last:.4f} "
              f"-> {'ok' if good else 'FAIL'}")
    torch.manual_seed(0)
    model = RNNModel("lstm", 10, 8, 8, 2, 0.5, True)
    WordLmTrainer(model, 0.1)  # puts the model in training mode
    xs = torch.arange(10).reshape(5, 2)
    good = model.training and not torch.equal(model(xs)[0], model(xs)[0])
    ok &= good
    print(f"  dropout is on while training (two forwards of one batch differ) -> "
          f"{'ok' if good else 'FAIL'}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main(args):
    if args.check:
        return check()
    if args.layers < 1 or not 0 <= args.dropout < 1:
        print("--layers must be >= 1 and --dropout in [0, 1)", file=sys.stderr)
        return 2
    try:
        res = bench(args)
    except ValueError as e:
        print(f"torch_rnnlm.py: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res))
    else:
        print(f"torch {res['torch']} ({res['threads']} threads): {res['model']} ({args.cell}, "
              f"{args.layers} layer(s), dropout {args.dropout:g}{', tied' if args.tie else ''}): "
              f"V={args.vocab} D={args.wordvec} "
              f"H={args.hidden} N={args.batch} T={args.time}: {res['tokens_per_sec']:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))

#!/usr/bin/env python3
"""The numpy SimpleRnnlm of "Deep Learning from Scratch 2", chapter 5, as a throughput peer.

Written from the book's formulas, in the book's style: one class per layer with
params / grads / forward / backward, TimeRNN looping over time steps with np.dot,
np.add.at for the embedding gradient, plain SGD. No extra optimisation.

    python numpy_rnnlm.py --vocab 10000 --wordvec 100 --hidden 100 --batch 20 --time 35 \
        --threads 2 --seconds 5 --json
    python numpy_rnnlm.py --check

The thread count is applied through OPENBLAS_NUM_THREADS / OMP_NUM_THREADS /
MKL_NUM_THREADS, which must be set before numpy is imported: this file parses its
arguments first and imports numpy afterwards.
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
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0,
                   help="total measuring time: 20%% warm-up, the rest split into --windows windows")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--check", action="store_true",
                   help="finite-difference gradient check and a tiny training run, then exit")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread variables on purpose)


# ---------------------------------------------------------------- functions

def softmax(x):
    if x.ndim == 2:
        x = x - x.max(axis=1, keepdims=True)
        x = np.exp(x)
        x /= x.sum(axis=1, keepdims=True)
    elif x.ndim == 1:
        x = x - np.max(x)
        x = np.exp(x) / np.sum(np.exp(x))
    return x


# ---------------------------------------------------------------- layers

class Embedding:
    def __init__(self, W):
        self.params = [W]
        self.grads = [np.zeros_like(W)]
        self.idx = None

    def forward(self, idx):
        W, = self.params
        self.idx = idx
        out = W[idx]
        return out

    def backward(self, dout):
        dW, = self.grads
        dW[...] = 0
        np.add.at(dW, self.idx, dout)
        return None


class TimeEmbedding:
    def __init__(self, W):
        self.params = [W]
        self.grads = [np.zeros_like(W)]
        self.layers = None
        self.W = W

    def forward(self, xs):
        N, T = xs.shape
        V, D = self.W.shape
        out = np.empty((N, T, D), dtype=self.W.dtype)
        self.layers = []
        for t in range(T):
            layer = Embedding(self.W)
            out[:, t, :] = layer.forward(xs[:, t])
            self.layers.append(layer)
        return out

    def backward(self, dout):
        N, T, D = dout.shape
        grad = 0
        for t in range(T):
            layer = self.layers[t]
            layer.backward(dout[:, t, :])
            grad += layer.grads[0]
        self.grads[0][...] = grad
        return None


class RNN:
    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        t = np.dot(h_prev, Wh) + np.dot(x, Wx) + b
        h_next = np.tanh(t)
        self.cache = (x, h_prev, h_next)
        return h_next

    def backward(self, dh_next):
        Wx, Wh, b = self.params
        x, h_prev, h_next = self.cache
        dt = dh_next * (1 - h_next ** 2)
        db = np.sum(dt, axis=0)
        dWh = np.dot(h_prev.T, dt)
        dh_prev = np.dot(dt, Wh.T)
        dWx = np.dot(x.T, dt)
        dx = np.dot(dt, Wx.T)
        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db
        return dx, dh_prev


class TimeRNN:
    def __init__(self, Wx, Wh, b, stateful=False):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.layers = None
        self.h, self.dh = None, None
        self.stateful = stateful

    def forward(self, xs):
        Wx, Wh, b = self.params
        N, T, D = xs.shape
        D, H = Wx.shape
        self.layers = []
        hs = np.empty((N, T, H), dtype=Wx.dtype)
        if not self.stateful or self.h is None:
            self.h = np.zeros((N, H), dtype=Wx.dtype)
        for t in range(T):
            layer = RNN(*self.params)
            self.h = layer.forward(xs[:, t, :], self.h)
            hs[:, t, :] = self.h
            self.layers.append(layer)
        return hs

    def backward(self, dhs):
        Wx, Wh, b = self.params
        N, T, H = dhs.shape
        D, H = Wx.shape
        dxs = np.empty((N, T, D), dtype=Wx.dtype)
        dh = 0
        grads = [0, 0, 0]
        for t in reversed(range(T)):
            layer = self.layers[t]
            dx, dh = layer.backward(dhs[:, t, :] + dh)
            dxs[:, t, :] = dx
            for i, grad in enumerate(layer.grads):
                grads[i] += grad
        for i, grad in enumerate(grads):
            self.grads[i][...] = grad
        self.dh = dh
        return dxs

    def set_state(self, h):
        self.h = h

    def reset_state(self):
        self.h = None


class TimeAffine:
    def __init__(self, W, b):
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]
        self.x = None

    def forward(self, x):
        N, T, D = x.shape
        W, b = self.params
        rx = x.reshape(N * T, -1)
        out = np.dot(rx, W) + b
        self.x = x
        return out.reshape(N, T, -1)

    def backward(self, dout):
        x = self.x
        N, T, D = x.shape
        W, b = self.params
        dout = dout.reshape(N * T, -1)
        rx = x.reshape(N * T, -1)
        db = np.sum(dout, axis=0)
        dW = np.dot(rx.T, dout)
        dx = np.dot(dout, W.T)
        dx = dx.reshape(*x.shape)
        self.grads[0][...] = dW
        self.grads[1][...] = db
        return dx


class TimeSoftmaxWithLoss:
    def __init__(self):
        self.params, self.grads = [], []
        self.cache = None
        self.ignore_label = -1

    def forward(self, xs, ts):
        N, T, V = xs.shape
        if ts.ndim == 3:  # one-hot targets
            ts = ts.argmax(axis=2)
        mask = (ts != self.ignore_label)
        xs = xs.reshape(N * T, V)
        ts = ts.reshape(N * T)
        mask = mask.reshape(N * T)
        ys = softmax(xs)
        ls = np.log(ys[np.arange(N * T), ts])
        ls *= mask
        loss = -np.sum(ls)
        loss /= mask.sum()
        self.cache = (ts, ys, mask, (N, T, V))
        return loss

    def backward(self, dout=1):
        ts, ys, mask, (N, T, V) = self.cache
        dx = ys
        dx[np.arange(N * T), ts] -= 1
        dx *= dout
        dx /= mask.sum()
        dx *= mask[:, np.newaxis]
        dx = dx.reshape((N, T, V))
        return dx


class SimpleRnnlm:
    def __init__(self, vocab_size, wordvec_size, hidden_size, dtype="f", rng=None):
        V, D, H = vocab_size, wordvec_size, hidden_size
        rn = (rng or np.random).randn
        embed_W = (rn(V, D) / 100).astype(dtype)
        rnn_Wx = (rn(D, H) / np.sqrt(D)).astype(dtype)
        rnn_Wh = (rn(H, H) / np.sqrt(H)).astype(dtype)
        rnn_b = np.zeros(H).astype(dtype)
        affine_W = (rn(H, V) / np.sqrt(H)).astype(dtype)
        affine_b = np.zeros(V).astype(dtype)

        self.layers = [
            TimeEmbedding(embed_W),
            TimeRNN(rnn_Wx, rnn_Wh, rnn_b, stateful=True),
            TimeAffine(affine_W, affine_b),
        ]
        self.loss_layer = TimeSoftmaxWithLoss()
        self.rnn_layer = self.layers[1]

        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads

    def forward(self, xs, ts):
        for layer in self.layers:
            xs = layer.forward(xs)
        loss = self.loss_layer.forward(xs, ts)
        return loss

    def backward(self, dout=1):
        dout = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def reset_state(self):
        self.rnn_layer.reset_state()


class SGD:
    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for i in range(len(params)):
            params[i] -= self.lr * grads[i]


# ---------------------------------------------------------------- batching (the ch05 loop)

class BookBatches:
    """xs = corpus[:-1], ts = corpus[1:]; row i reads (i*jump + time_idx) % len(xs)."""

    def __init__(self, corpus, batch_size, time_size):
        self.xs = corpus[:-1]
        self.ts = corpus[1:]
        self.data_size = len(self.xs)
        self.batch_size, self.time_size = batch_size, time_size
        jump = self.data_size // batch_size
        self.offsets = [i * jump for i in range(batch_size)]
        self.time_idx = 0

    def next_batch(self):
        batch_x = np.empty((self.batch_size, self.time_size), dtype="i")
        batch_t = np.empty((self.batch_size, self.time_size), dtype="i")
        for t in range(self.time_size):
            for i, offset in enumerate(self.offsets):
                batch_x[i, t] = self.xs[(offset + self.time_idx) % self.data_size]
                batch_t[i, t] = self.ts[(offset + self.time_idx) % self.data_size]
            self.time_idx += 1
        return batch_x, batch_t


# ---------------------------------------------------------------- benchmark

def blas_info():
    """(BLAS name + version, its threads) as far as threadpoolctl or numpy tell."""
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("user_api") == "blas":
                name = f"{info.get('internal_api')} {info.get('version')}"
                extra = [info.get(k) for k in ("architecture", "threading_layer") if info.get(k)]
                if extra:
                    name += f" ({', '.join(extra)})"
                return name, info.get("num_threads")
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}", None
    except Exception:  # noqa: BLE001  (older numpy: no dict mode)
        return "unknown", None


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


def bench(args):
    V, D, H, N, T = args.vocab, args.wordvec, args.hidden, args.batch, args.time
    rng = np.random.RandomState(args.seed)
    model = SimpleRnnlm(V, D, H, rng=rng)
    optimizer = SGD(args.lr)
    # A synthetic corpus long enough for 64 distinct batches (as `rnnlm bench`).
    corpus = rng.randint(0, V, size=64 * N * T + 1).astype("i")
    batches = BookBatches(corpus, N, T)
    assert all(p.dtype == np.float32 for p in model.params)

    def step():
        batch_x, batch_t = batches.next_batch()
        model.forward(batch_x, batch_t)
        model.backward()
        optimizer.update(model.params, model.grads)

    tps, rates, steps = median_rate(step, N * T, args.seconds, args.windows)
    assert all(p.dtype == np.float32 for p in model.params), "parameters left float32"
    blas, blas_threads = blas_info()
    return {
        "system": "numpy",
        "vocab": V, "wordvec": D, "hidden": H, "batch": N, "time": T,
        "threads": args.threads,
        "blas_threads": blas_threads,
        "tokens_per_sec": tps,
        "window_tokens_per_sec": rates,
        "steps": steps,
        "numpy": np.__version__,
        "blas": blas,
    }


# ---------------------------------------------------------------- checks

def grad_check(V=7, D=5, H=4, N=3, T=4, seed=1, eps=1e-6):
    """Central finite differences of the loss against backward(), in float64.

    The carried state is set to the same non-zero h before every evaluation, so the check
    also covers the stateful path (h enters as a constant: truncated BPTT)."""
    rng = np.random.RandomState(seed)
    model = SimpleRnnlm(V, D, H, dtype="d", rng=rng)
    # Non-zero biases so their gradients are exercised away from the init point.
    for p in model.params:
        p += 0.1 * rng.randn(*p.shape)
    xs = rng.randint(0, V, size=(N, T))  # V small: ids repeat, exercising np.add.at
    ts = rng.randint(0, V, size=(N, T))
    h0 = np.tanh(rng.randn(N, H))

    def loss():
        model.rnn_layer.set_state(h0.copy())
        return model.forward(xs, ts)

    loss()
    model.backward()
    names = ["embed.W", "rnn.Wx", "rnn.Wh", "rnn.b", "affine.W", "affine.b"]
    worst = 0.0
    for name, p, g in zip(names, model.params, model.grads):
        analytic = g.copy()
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            lp = loss()
            p[i] = old - eps
            lm = loss()
            p[i] = old
            numeric[i] = (lp - lm) / (2 * eps)
        err = np.max(np.abs(analytic - numeric)) / max(1e-8, np.max(np.abs(numeric)))
        worst = max(worst, err)
        print(f"  grad {name:9s} max rel err {err:.2e}")
    return worst


def train_check(V=10, D=16, H=16, N=4, T=5, steps=300, lr=0.1, seed=0):
    """Loss at init ~ ln(V), then falls on a tiny repeated corpus. Returns the losses."""
    rng = np.random.RandomState(seed)
    model = SimpleRnnlm(V, D, H, rng=rng)
    optimizer = SGD(lr)
    corpus = np.tile(np.arange(V, dtype="i"), 20)
    batches = BookBatches(corpus, N, T)
    losses = []
    for _ in range(steps):
        x, t = batches.next_batch()
        losses.append(float(model.forward(x, t)))
        model.backward()
        optimizer.update(model.params, model.grads)
    assert all(p.dtype == np.float32 for p in model.params)
    return losses


def check():
    ok = True
    print("numpy SimpleRnnlm check")
    worst = grad_check()
    good = worst < 1e-6
    ok &= good
    print(f"  gradients: worst rel err {worst:.2e} -> {'ok' if good else 'FAIL'}")
    V = 10
    losses = train_check(V=V)
    first, last = losses[0], statistics.mean(losses[-10:])
    good = abs(first - math.log(V)) < 0.05 and last < 0.5 * first
    ok &= good
    print(f"  loss at init {first:.4f} (ln V = {math.log(V):.4f}), mean of last 10 of "
          f"{len(losses)} steps {last:.4f} -> {'ok' if good else 'FAIL'}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main(args):
    if args.check:
        return check()
    res = bench(args)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"numpy {res['numpy']} ({res['blas']}, {res['blas_threads']} threads): "
              f"V={args.vocab} D={args.wordvec} H={args.hidden} N={args.batch} T={args.time}: "
              f"{res['tokens_per_sec']:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))

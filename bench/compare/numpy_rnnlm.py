#!/usr/bin/env python3
"""The numpy models of "Deep Learning from Scratch 2", chapters 5 and 6, as throughput peers.

Written from the book's formulas, in the book's style: one class per layer with
params / grads / forward / backward, TimeRNN / TimeLSTM looping over time steps with np.dot,
np.add.at for the embedding gradient, TimeDropout with np.random masks, plain SGD. No extra
optimisation. The model follows --cell / --layers / --dropout / --tie:

- rnn (1 layer, no dropout, untied): ch05 SimpleRnnlm;
- lstm, 1 layer, no dropout, untied: ch06 Rnnlm;
- lstm otherwise: ch06 BetterRnnlm (TimeDropout after the embedding and after every
  TimeLSTM when --dropout > 0, output weights embed_W.T with --tie); the book's own
  BetterRnnlm is --layers 2 --dropout 0.5 --tie.

There is no GRU: the book's main text has none.

    python numpy_rnnlm.py --vocab 10000 --wordvec 100 --hidden 100 --batch 20 --time 35 \
        --threads 2 --seconds 5 --json
    python numpy_rnnlm.py --cell lstm --layers 2 --wordvec 650 --hidden 650 --dropout 0.5 --tie \
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
    p.add_argument("--cell", choices=["rnn", "lstm"], default="rnn",
                   help="rnn: ch05 SimpleRnnlm; lstm: ch06 Rnnlm / BetterRnnlm (no GRU in the book)")
    p.add_argument("--layers", type=int, default=1, help="stacked TimeLSTM layers (lstm only)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="TimeDropout ratio after the embedding and every TimeLSTM (lstm only)")
    p.add_argument("--tie", action="store_true",
                   help="output weights = embed_W.T, as BetterRnnlm (lstm only; needs D == H)")
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


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


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


class LSTM:
    """One step; A = x Wx + h Wh + b split into the gates f, g, i, o (the book's order)."""

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = self.params
        N, H = h_prev.shape

        A = np.dot(x, Wx) + np.dot(h_prev, Wh) + b

        f = A[:, :H]
        g = A[:, H:2*H]
        i = A[:, 2*H:3*H]
        o = A[:, 3*H:]

        f = sigmoid(f)
        g = np.tanh(g)
        i = sigmoid(i)
        o = sigmoid(o)

        c_next = f * c_prev + g * i
        h_next = o * np.tanh(c_next)

        self.cache = (x, h_prev, c_prev, i, f, g, o, c_next)
        return h_next, c_next

    def backward(self, dh_next, dc_next):
        Wx, Wh, b = self.params
        x, h_prev, c_prev, i, f, g, o, c_next = self.cache

        tanh_c_next = np.tanh(c_next)

        ds = dc_next + (dh_next * o) * (1 - tanh_c_next ** 2)

        dc_prev = ds * f

        di = ds * g
        df = ds * c_prev
        do = dh_next * tanh_c_next
        dg = ds * i

        di *= i * (1 - i)
        df *= f * (1 - f)
        do *= o * (1 - o)
        dg *= (1 - g ** 2)

        dA = np.hstack((df, dg, di, do))

        dWh = np.dot(h_prev.T, dA)
        dWx = np.dot(x.T, dA)
        db = dA.sum(axis=0)

        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db

        dx = np.dot(dA, Wx.T)
        dh_prev = np.dot(dA, Wh.T)

        return dx, dh_prev, dc_prev


class TimeLSTM:
    def __init__(self, Wx, Wh, b, stateful=False):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.layers = None

        self.h, self.c = None, None
        self.dh = None
        self.stateful = stateful

    def forward(self, xs):
        Wx, Wh, b = self.params
        N, T, D = xs.shape
        H = Wh.shape[0]

        self.layers = []
        hs = np.empty((N, T, H), dtype=Wx.dtype)

        if not self.stateful or self.h is None:
            self.h = np.zeros((N, H), dtype=Wx.dtype)
        if not self.stateful or self.c is None:
            self.c = np.zeros((N, H), dtype=Wx.dtype)

        for t in range(T):
            layer = LSTM(*self.params)
            self.h, self.c = layer.forward(xs[:, t, :], self.h, self.c)
            hs[:, t, :] = self.h

            self.layers.append(layer)

        return hs

    def backward(self, dhs):
        Wx, Wh, b = self.params
        N, T, H = dhs.shape
        D = Wx.shape[0]

        dxs = np.empty((N, T, D), dtype=Wx.dtype)
        dh, dc = 0, 0

        grads = [0, 0, 0]
        for t in reversed(range(T)):
            layer = self.layers[t]
            dx, dh, dc = layer.backward(dhs[:, t, :] + dh, dc)
            dxs[:, t, :] = dx
            for i, grad in enumerate(layer.grads):
                grads[i] += grad

        for i, grad in enumerate(grads):
            self.grads[i][...] = grad
        self.dh = dh
        return dxs

    def set_state(self, h, c=None):
        self.h, self.c = h, c

    def reset_state(self):
        self.h, self.c = None, None


class TimeDropout:
    def __init__(self, dropout_ratio=0.5):
        self.params, self.grads = [], []
        self.dropout_ratio = dropout_ratio
        self.mask = None
        self.train_flg = True

    def forward(self, xs):
        if self.train_flg:
            flg = np.random.rand(*xs.shape) > self.dropout_ratio
            scale = 1 / (1.0 - self.dropout_ratio)
            self.mask = flg.astype(np.float32) * scale

            return xs * self.mask
        else:
            return xs

    def backward(self, dout):
        return dout * self.mask


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


class Rnnlm:
    """Chapter 6's Rnnlm: TimeEmbedding -> TimeLSTM -> TimeAffine."""

    def __init__(self, vocab_size=10000, wordvec_size=100, hidden_size=100, dtype="f", rng=None):
        V, D, H = vocab_size, wordvec_size, hidden_size
        rn = (rng or np.random).randn

        embed_W = (rn(V, D) / 100).astype(dtype)
        lstm_Wx = (rn(D, 4 * H) / np.sqrt(D)).astype(dtype)
        lstm_Wh = (rn(H, 4 * H) / np.sqrt(H)).astype(dtype)
        lstm_b = np.zeros(4 * H).astype(dtype)
        affine_W = (rn(H, V) / np.sqrt(H)).astype(dtype)
        affine_b = np.zeros(V).astype(dtype)

        self.layers = [
            TimeEmbedding(embed_W),
            TimeLSTM(lstm_Wx, lstm_Wh, lstm_b, stateful=True),
            TimeAffine(affine_W, affine_b)
        ]
        self.loss_layer = TimeSoftmaxWithLoss()
        self.lstm_layer = self.layers[1]
        self.lstm_layers = [self.lstm_layer]

        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads

    def predict(self, xs):
        for layer in self.layers:
            xs = layer.forward(xs)
        return xs

    def forward(self, xs, ts):
        score = self.predict(xs)
        loss = self.loss_layer.forward(score, ts)
        return loss

    def backward(self, dout=1):
        dout = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def reset_state(self):
        self.lstm_layer.reset_state()


class BetterRnnlm:
    """Chapter 6's BetterRnnlm: TimeEmbedding -> TimeDropout -> (TimeLSTM -> TimeDropout) x 2
    -> TimeAffine with embed_W.T (weight tying). The defaults are the book's; `num_layers`,
    `tied=False` (an own affine_W, drawn as Rnnlm's) and `dropout_ratio=0` (no TimeDropout
    layers at all) give the other stacked LSTMs measured here."""

    def __init__(self, vocab_size=10000, wordvec_size=650, hidden_size=650, dropout_ratio=0.5,
                 tied=True, num_layers=2, dtype="f", rng=None):
        V, D, H = vocab_size, wordvec_size, hidden_size
        rn = (rng or np.random).randn
        if tied and D != H:
            raise ValueError("weight tying needs wordvec_size == hidden_size")

        embed_W = (rn(V, D) / 100).astype(dtype)
        lstm_params = []
        for l in range(num_layers):
            I = D if l == 0 else H
            lstm_Wx = (rn(I, 4 * H) / np.sqrt(I)).astype(dtype)
            lstm_Wh = (rn(H, 4 * H) / np.sqrt(H)).astype(dtype)
            lstm_b = np.zeros(4 * H).astype(dtype)
            lstm_params.append((lstm_Wx, lstm_Wh, lstm_b))
        affine_W = embed_W.T if tied else (rn(H, V) / np.sqrt(H)).astype(dtype)
        affine_b = np.zeros(V).astype(dtype)

        self.layers = [TimeEmbedding(embed_W)]
        if dropout_ratio > 0:
            self.layers.append(TimeDropout(dropout_ratio))
        for Wx, Wh, b in lstm_params:
            self.layers.append(TimeLSTM(Wx, Wh, b, stateful=True))
            if dropout_ratio > 0:
                self.layers.append(TimeDropout(dropout_ratio))
        self.layers.append(TimeAffine(affine_W, affine_b))  # weight tying!! (when tied)
        self.loss_layer = TimeSoftmaxWithLoss()
        self.lstm_layers = [layer for layer in self.layers if isinstance(layer, TimeLSTM)]
        self.drop_layers = [layer for layer in self.layers if isinstance(layer, TimeDropout)]
        self.tied = tied

        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads

    def predict(self, xs, train_flg=False):
        for layer in self.drop_layers:
            layer.train_flg = train_flg

        for layer in self.layers:
            xs = layer.forward(xs)
        return xs

    def forward(self, xs, ts, train_flg=True):
        score = self.predict(xs, train_flg)
        loss = self.loss_layer.forward(score, ts)
        return loss

    def backward(self, dout=1):
        dout = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def reset_state(self):
        for layer in self.lstm_layers:
            layer.reset_state()


def make_model(cell, V, D, H, layers=1, dropout=0.0, tied=False, dtype="f", rng=None):
    """The book's model for a configuration (see the module's docstring)."""
    if cell == "rnn":
        if layers != 1 or dropout > 0 or tied:
            raise ValueError("the book's SimpleRnnlm has 1 layer, no dropout and no tying")
        return SimpleRnnlm(V, D, H, dtype=dtype, rng=rng)
    if cell == "lstm":
        if layers == 1 and dropout == 0 and not tied:
            return Rnnlm(V, D, H, dtype=dtype, rng=rng)
        return BetterRnnlm(V, D, H, dropout_ratio=dropout, tied=tied, num_layers=layers,
                           dtype=dtype, rng=rng)
    raise ValueError(f"no numpy {cell} model: the book's main text has only rnn and lstm")


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
    np.random.seed(args.seed)  # TimeDropout draws its masks from np.random, as in the book
    model = make_model(args.cell, V, D, H, layers=args.layers, dropout=args.dropout,
                       tied=args.tie, rng=rng)
    optimizer = SGD(args.lr)
    # A synthetic corpus long enough for 64 distinct batches (as `rnnlm bench`).
    corpus = rng.randint(0, V, size=64 * N * T + 1).astype("i")
    batches = BookBatches(corpus, N, T)
    assert all(p.dtype == np.float32 for p in model.params)

    # With tying, params holds embed_W and its transposed view embed_W.T (BetterRnnlm's
    # TimeAffine): SGD's two in-place updates apply both gradients to the one array. The
    # book's Trainer would also run remove_duplicate and clip_grads every step; neither is
    # here (rnnlm bench and the PyTorch peer do not clip either).
    def step():
        batch_x, batch_t = batches.next_batch()
        model.forward(batch_x, batch_t)  # BetterRnnlm: train_flg=True (dropout on)
        model.backward()
        optimizer.update(model.params, model.grads)

    tps, rates, steps = median_rate(step, N * T, args.seconds, args.windows)
    assert all(p.dtype == np.float32 for p in model.params), "parameters left float32"
    blas, blas_threads = blas_info()
    return {
        "system": "numpy",
        "model": type(model).__name__,
        "cell": args.cell, "layers": args.layers, "tied": args.tie, "dropout": args.dropout,
        "vocab": V, "wordvec": D, "hidden": H, "batch": N, "time": T,
        "threads": args.threads,
        "blas_threads": blas_threads,
        "tokens_per_sec": tps,
        "window_tokens_per_sec": rates,
        "steps": steps,
        "numpy": np.__version__,
        "blas": blas,
        "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
    }


# ---------------------------------------------------------------- checks

def param_names(model):
    """A name for every entry of model.params (views of a tied weight included)."""
    names = []
    for layer in model.layers:
        kind = type(layer).__name__
        sub = {"TimeEmbedding": ["embed.W"], "TimeRNN": ["rnn.Wx", "rnn.Wh", "rnn.b"],
               "TimeLSTM": ["lstm.Wx", "lstm.Wh", "lstm.b"],
               "TimeAffine": ["affine.W", "affine.b"]}.get(kind, [])
        k = sum(1 for l in model.layers[:model.layers.index(layer)] if type(l) is type(layer))
        names += [n if kind != "TimeLSTM" else n.replace("lstm", f"lstm{k}") for n in sub]
    return names


def set_states(model, rng, N):
    """Fixed non-zero carried states (h, and c for an LSTM) for every recurrent layer."""
    states = []
    for layer in model.layers:
        if isinstance(layer, TimeRNN):
            H = layer.params[1].shape[0]
            states.append((layer, np.tanh(rng.randn(N, H))))
        elif isinstance(layer, TimeLSTM):
            H = layer.params[1].shape[0]
            states.append((layer, np.tanh(rng.randn(N, H)), rng.randn(N, H)))

    def apply():
        for layer, *st in states:
            layer.set_state(*[a.copy() for a in st])
    return apply


def grad_check(make, V=7, N=3, T=4, seed=1, eps=1e-6, label=""):
    """Central finite differences of the loss against backward(), in float64.

    The carried states are set to the same non-zero values before every evaluation, so the
    check also covers the stateful path (they enter as constants: truncated BPTT), and
    np.random is reseeded so that every evaluation draws the same dropout masks. A tied
    weight's analytic gradient is the sum over its appearances (embed_W and embed_W.T)."""
    rng = np.random.RandomState(seed)
    model = make(rng)
    # Non-zero biases so their gradients are exercised away from the init point.
    for p in model.params:
        if p.base is None:
            p += 0.1 * rng.randn(*p.shape)
    xs = rng.randint(0, V, size=(N, T))  # V small: ids repeat, exercising np.add.at
    ts = rng.randint(0, V, size=(N, T))
    states = set_states(model, rng, N)

    def loss():
        states()
        np.random.seed(seed + 1000)
        return model.forward(xs, ts)

    loss()
    model.backward()
    names = param_names(model)
    worst = 0.0
    for name, p, g in zip(names, model.params, model.grads):
        if p.base is not None:
            continue  # a view (the tied embed_W.T): counted with its owner
        analytic = g.copy()
        for q, gq in zip(model.params, model.grads):
            if q.base is p:
                analytic += gq.T
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
        print(f"  {label} grad {name:10s} max rel err {err:.2e}")
    return worst


def train_check(make, V=10, N=4, T=5, steps=300, lr=0.1, seed=0):
    """Loss at init ~ ln(V), then falls on a tiny repeated corpus. Returns the losses."""
    rng = np.random.RandomState(seed)
    np.random.seed(seed)
    model = make(rng)
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


# (label, cell, D, H, layers, dropout, tied, lr of the training check)
CHECKS = [
    ("SimpleRnnlm", "rnn", 5, 4, 1, 0.0, False, 0.1),
    ("Rnnlm", "lstm", 5, 4, 1, 0.0, False, 1.0),
    ("2-layer LSTM", "lstm", 5, 4, 2, 0.0, False, 1.0),
    ("BetterRnnlm", "lstm", 4, 4, 2, 0.5, True, 1.0),
]


def check():
    ok = True
    V = 10
    for label, cell, D, H, L, p, tied, lr in CHECKS:
        print(f"numpy {label} check ({cell}, {L} layer(s), dropout {p}, {'tied' if tied else 'untied'})")
        worst = grad_check(lambda rng: make_model(cell, 7, D, H, L, p, tied, dtype="d", rng=rng),
                           label=label)
        good = worst < 1e-6
        ok &= good
        print(f"  gradients: worst rel err {worst:.2e} -> {'ok' if good else 'FAIL'}")
        # The training check runs without dropout: it asks whether the model learns at all.
        losses = train_check(lambda rng: make_model(cell, V, 16, 16, L, 0.0, tied, rng=rng),
                             V=V, lr=lr)
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
    if args.layers < 1 or not 0 <= args.dropout < 1:
        print("--layers must be >= 1 and --dropout in [0, 1)", file=sys.stderr)
        return 2
    try:
        res = bench(args)
    except ValueError as e:
        print(f"numpy_rnnlm.py: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res))
    else:
        print(f"numpy {res['numpy']} ({res['blas']}, {res['blas_threads']} threads): "
              f"{res['model']} ({args.cell}, {args.layers} layer(s), dropout {args.dropout:g}"
              f"{', tied' if args.tie else ''}): "
              f"V={args.vocab} D={args.wordvec} H={args.hidden} N={args.batch} T={args.time}: "
              f"{res['tokens_per_sec']:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))

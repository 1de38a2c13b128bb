"""Trains PyTorch's word_language_model recipe on PTB for a few epochs: the convergence anchor.

The model is word_language_model's RNNModel structure (embedding, dropout, nn.LSTM or nn.GRU,
dropout, linear decoder, optionally tied) with its initialisation (encoder and decoder
U(-0.1, 0.1), decoder bias 0, the recurrent layers PyTorch's defaults), trained as its main.py
does: batchify into `--batch` streams, chunks of `--bptt`, plain SGD at `--lr` with the gradient
norm clipped at `--clip`, the hidden state carried and detached, validation after each epoch with
evaluate() (10 streams), and lr /= 4 after an epoch that does not improve. It prints one line per
epoch and, with --json, one JSON object at the end (valid per epoch, test of the best model).

Used to check that `rnnlm train --cell gru` converges as PyTorch's own GRU does (and the LSTM):
`rnnlm train --protocol torch` evaluates exactly as evaluate() here. Needs torch; CI never runs it.

    python torch_train_ptb.py --data $RNNLM_PTB_DIR --cell gru --epochs 1 --threads 2
"""

import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder with ptb.{train,valid,test}.txt")
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--emsize", type=int, default=200)
    p.add_argument("--nhid", type=int, default=200)
    p.add_argument("--nlayers", type=int, default=2)
    p.add_argument("--lr", type=float, default=20.0)
    p.add_argument("--clip", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--untied", action="store_true", help="do not tie the decoder to the encoder")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    return p.parse_args()


def read_ids(path, vocab, grow):
    """The file's words with <eos> after each line, as ids; new words are added when `grow`."""
    ids = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            for w in line.split() + ["<eos>"]:
                if w not in vocab:
                    if not grow:
                        raise ValueError(f"{path}: {w!r} is not in the training vocabulary")
                    vocab[w] = len(vocab)
                ids.append(vocab[w])
    return torch.tensor(ids, dtype=torch.long)


def streams(data, n):
    """word_language_model's batchify: n contiguous streams as columns, the tail dropped."""
    length = data.size(0) // n
    return data[: length * n].view(n, length).t().contiguous()


class Model(nn.Module):
    def __init__(self, cell, ntoken, ninp, nhid, nlayers, dropout, tied):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tied:
            assert ninp == nhid, "tying needs emsize == nhid"
            self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        self.cell, self.nlayers, self.nhid = cell, nlayers, nhid

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(self.drop(out)).view(-1, self.decoder.out_features), hidden

    def zero_state(self, n):
        z = lambda: torch.zeros(self.nlayers, n, self.nhid)
        return (z(), z()) if self.cell == "lstm" else z()


def detach(h):
    return tuple(x.detach() for x in h) if isinstance(h, tuple) else h.detach()


def evaluate(model, data, bptt):
    """word_language_model's evaluate(): exp of the mean per-token loss over all chunks."""
    model.eval()
    total, hidden = 0.0, model.zero_state(data.size(1))
    with torch.no_grad():
        for i in range(0, data.size(0) - 1, bptt):
            n = min(bptt, data.size(0) - 1 - i)
            logits, hidden = model(data[i : i + n], hidden)
            total += n * nn.functional.cross_entropy(logits, data[i + 1 : i + 1 + n].reshape(-1)).item()
    return math.exp(total / (data.size(0) - 1))


def main():
    a = parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    vocab = {}
    train = read_ids(os.path.join(a.data, "ptb.train.txt"), vocab, True)
    valid = read_ids(os.path.join(a.data, "ptb.valid.txt"), vocab, False)
    test = read_ids(os.path.join(a.data, "ptb.test.txt"), vocab, False)
    train, valid, test = streams(train, a.batch), streams(valid, 10), streams(test, 10)
    model = Model(a.cell, len(vocab), a.emsize, a.nhid, a.nlayers, a.dropout, not a.untied)
    lr, best, best_state, curve = a.lr, None, None, []
    t0 = time.time()
    tokens = 0
    for epoch in range(1, a.epochs + 1):
        model.train()
        hidden = model.zero_state(a.batch)
        for i in range(0, train.size(0) - 1, a.bptt):
            n = min(a.bptt, train.size(0) - 1 - i)
            hidden = detach(hidden)
            model.zero_grad()
            logits, hidden = model(train[i : i + n], hidden)
            loss = nn.functional.cross_entropy(logits, train[i + 1 : i + 1 + n].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            tokens += n * a.batch
        v = evaluate(model, valid, a.bptt)
        curve.append(v)
        improved = best is None or v < best
        print(f"| epoch {epoch} | valid perplexity {v:.2f} | lr {lr} | {time.time() - t0:.0f} s", flush=True)
        if improved:
            best = v
            best_state = {k: t.clone() for k, t in model.state_dict().items()}
        else:
            lr /= 4.0
    model.load_state_dict(best_state)
    t = evaluate(model, test, a.bptt)
    secs = time.time() - t0
    print(f"valid {best:.2f} | test {t:.2f} | {tokens / secs:.0f} tokens/s | {secs:.0f} s | {a.threads} threads")
    if a.json:
        print(json.dumps({"cell": a.cell, "valid_per_epoch": curve, "best_valid": best,
                          "test": t, "torch": torch.__version__, "threads": a.threads,
                          "seconds": secs}))


if __name__ == "__main__":
    main()

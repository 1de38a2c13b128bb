#!/usr/bin/env python3
"""Side-by-side training throughput: rnnlm vs the book's numpy model vs PyTorch.

Runs, for each round, the sgemm yardstick (peak.py), then for each configuration
`rnnlm bench`, numpy_rnnlm.py and torch_rnnlm.py one after another, each in a fresh process
with the same thread count, then prints a Markdown table (median over rounds, with each
system's share of the sgemm peak) and writes it to latest.md.

With --score FILE --model M, times `rnnlm score` against torch_score.py instead.

Standard library only: numpy and torch live in bench/compare/.venv, created on first use
(or in the interpreter given with --python).
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(HERE, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
RNNLM = os.path.join(ROOT, "target", "release", "rnnlm")
# Plain `torch` from the default index: on Linux x86_64 that is the CUDA build (~3 GB of
# wheels with its nvidia-* dependencies, ~5.4 GB installed); it runs on the CPU all the same.
PACKAGES = ["numpy", "torch", "threadpoolctl"]


class Cfg:
    """One configuration: the model and the batch shape."""

    def __init__(self, label, V, D, H, N, T, cell="rnn", layers=1, dropout=0.0, tie=False):
        self.label, self.V, self.D, self.H, self.N, self.T = label, V, D, H, N, T
        self.cell, self.layers, self.dropout, self.tie = cell, layers, dropout, tie

    def model(self):
        if self.cell == "rnn" and self.layers == 1:
            return "tanh RNN"
        parts = [f"{self.cell.upper()} x{self.layers}"]
        if self.tie:
            parts.append("tied")
        if self.dropout:
            parts.append(f"dropout {self.dropout:g}")
        return ", ".join(parts)

    def flops_per_token(self):
        """6 * (sum over layers of (D_l*G*H + H*G*H) + H*V): every GEMM's multiply-adds per token,
        2 FLOPs each, times 3 (forward, the input gradient and the weight gradient)."""
        return flops_per_token(self.cell, self.V, self.D, self.H, self.layers)


def flops_per_token(cell, V, D, H, layers):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    macs = sum(((D if l == 0 else H) * G * H + H * G * H) for l in range(layers)) + H * V
    return 6 * macs


# name -> configuration
CONFIGS = {
    "A": Cfg("seed", 418, 100, 100, 10, 5),
    "B": Cfg("ptb-small", 10000, 100, 100, 20, 35),
    "C": Cfg("ptb-medium", 10000, 650, 650, 20, 35),
    "D": Cfg("big-batch", 10000, 256, 256, 128, 35),
    "E": Cfg("lstm-small", 10000, 200, 200, 20, 35, cell="lstm", layers=2),
    "F": Cfg("better", 10000, 650, 650, 20, 35, cell="lstm", layers=2, dropout=0.5, tie=True),
    "G": Cfg("gru-small", 10000, 200, 200, 20, 35, cell="gru", layers=2),
    "R": Cfg("lstm-book", 10000, 100, 100, 20, 35, cell="lstm", layers=1),
}
SYSTEMS = ["ours", "numpy", "torch"]
TITLES = {"ours": "rnnlm", "numpy": "numpy (book)", "torch": "PyTorch"}
# The book's main text has no GRU: no numpy peer for G.
NUMPY_CELLS = ("rnn", "lstm")
# Set on some processors here for older OpenBLAS builds; they slow a current numpy, so the
# numpy and sgemm children run without them (unless --keep-openblas-env).
OPENBLAS_HINTS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SKIPPED = "skipped"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="threads for every system (default 2)")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma list of {','.join(CONFIGS)} (default all)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--seconds", type=float, default=5.0,
                   help="per measurement: 20%% warm-up + WINDOWS timed windows (default 5)")
    p.add_argument("--windows", type=int, default=5, help="timed windows per measurement (default 5)")
    p.add_argument("--only", default="ours,numpy,torch",
                   help="restrict to some of ours,numpy,torch (comma list)")
    p.add_argument("--build", action="store_true",
                   help="run `cargo build --release --bin rnnlm` even if the binary exists")
    p.add_argument("--out", default=None,
                   help="where to write the Markdown report (default bench/compare/latest.md, "
                        "or latest-score.md with --score)")
    p.add_argument("--python", default=None,
                   help="Python with numpy, torch and threadpoolctl to use instead of "
                        "bench/compare/.venv (nothing is installed into it)")
    p.add_argument("--peak-size", type=int, default=2048,
                   help="n of the float32 n x n x n sgemm yardstick (default 2048)")
    p.add_argument("--peak-repeats", type=int, default=5,
                   help="timed products per sgemm measurement, median counts (default 5)")
    p.add_argument("--no-peak", action="store_true", help="skip the sgemm yardstick")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="leave OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE set for numpy and the sgemm")
    p.add_argument("--score", metavar="FILE", default=None,
                   help="instead of training: time `rnnlm score --model M FILE` against "
                        "torch_score.py (needs --model)")
    p.add_argument("--model", metavar="M", default=None,
                   help="with --score: an rnnlm checkpoint (safetensors); torch_score.py uses "
                        "its config")
    p.add_argument("--score-batch", type=int, default=32,
                   help="with --score: lines per padded batch of torch_score.py (default 32)")
    a = p.parse_args()
    if (a.score is None) != (a.model is None):
        p.error("--score FILE and --model M go together")
    if a.out is None:
        a.out = os.path.join(HERE, "latest-score.md" if a.score else "latest.md")
    a.configs = [c.strip().upper() for c in a.configs.split(",") if c.strip()]
    bad = [c for c in a.configs if c not in CONFIGS]
    if bad:
        p.error(f"unknown config(s) {bad}; choose from {','.join(CONFIGS)}")
    a.only = [s.strip().lower() for s in a.only.split(",") if s.strip()]
    a.only = ["ours" if s in ("rnnlm", "rust") else s for s in a.only]
    bad = [s for s in a.only if s not in SYSTEMS]
    if bad or not a.only:
        p.error(f"--only takes some of {','.join(SYSTEMS)}")
    a.only = [s for s in SYSTEMS if s in a.only]  # fixed order: ours, numpy, torch
    if a.threads < 1 or a.rounds < 1 or a.windows < 1 or a.seconds <= 0:
        p.error("--threads, --rounds, --windows must be >= 1 and --seconds > 0")
    if a.peak_size < 1 or a.peak_repeats < 1 or a.score_batch < 1:
        p.error("--peak-size, --peak-repeats and --score-batch must be >= 1")
    return a


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup

def ensure_binary(force):
    if os.path.exists(RNNLM) and not force:
        return
    log(f"building rnnlm: cargo build --release --bin rnnlm (in {ROOT})")
    subprocess.run(["cargo", "build", "--release", "--bin", "rnnlm"], cwd=ROOT, check=True)


def ensure_venv(systems, python=None):
    need = ["numpy"] + (["torch"] if "torch" in systems else [])
    if python is not None:
        probe = subprocess.run([python, "-c", "import " + ", ".join(need)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if probe.returncode != 0:
            sys.exit(f"run.py: {python} cannot import {', '.join(need)}")
        return
    if not os.path.exists(VENV_PY):
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    probe = subprocess.run([VENV_PY, "-c", "import " + ", ".join(need)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode == 0:
        return
    pkgs = [p for p in PACKAGES if p != "torch" or "torch" in systems]
    log(f"installing {' '.join(pkgs)} into {VENV}"
        + (" (torch pulls ~3 GB of CUDA wheels: a few minutes)" if "torch" in pkgs else ""))
    t0 = time.time()
    subprocess.run([VENV_PY, "-m", "pip", "install", *pkgs], check=True)
    log(f"installed in {time.time() - t0:.0f} s")


# ---------------------------------------------------------------- one measurement

def cpu_busy_ticks():
    """(busy, total) jiffies of all CPUs from /proc/stat (None off Linux)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])  # guest times are already inside user/nice
    return total - idle, total


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def command(system, cfg, args):
    """The command line of one measurement, or None when the system has no such model."""
    if system in ("peak", "peak_torch"):
        lib = ["--library", "torch"] if system == "peak_torch" else []
        return [args.python, os.path.join(HERE, "peak.py"), "--threads", str(args.threads),
                "--size", str(args.peak_size), "--repeats", str(args.peak_repeats), "--json", *lib]
    model = ["--cell", cfg.cell, "--layers", str(cfg.layers)]
    if cfg.dropout:
        model += ["--dropout", f"{cfg.dropout:g}"]
    if cfg.tie:
        model += ["--tie"]
    shape = ["--vocab", str(cfg.V), "--wordvec", str(cfg.D), "--hidden", str(cfg.H),
             "--batch", str(cfg.N), "--time", str(cfg.T), "--threads", str(args.threads)]
    if system == "ours":
        warm = 0.2 * args.seconds
        window = 0.8 * args.seconds / args.windows
        return [RNNLM, "bench", *shape, *model, "--mode", "train", "--json",
                "--warmup", f"{warm:g}", "--windows", str(args.windows), "--window", f"{window:g}"]
    if system == "numpy" and cfg.cell not in NUMPY_CELLS:
        return None
    script = os.path.join(HERE, f"{system}_rnnlm.py")
    # The default model is the book's SimpleRnnlm in both peers: pass no model flags for it,
    # so A-D run exactly the command lines they always did.
    if cfg.cell == "rnn" and cfg.layers == 1 and not cfg.dropout and not cfg.tie:
        model = []
    return [args.python, script, *shape, *model,
            "--seconds", f"{args.seconds:g}", "--windows", str(args.windows), "--json"]


def child_env(system, args, env):
    """numpy and the sgemm yardstick run without the OpenBLAS core-type hints."""
    if system in ("numpy", "peak") and not args.keep_openblas_env:
        return {k: v for k, v in env.items() if k not in OPENBLAS_HINTS}
    return env


def run_child(cmd, env, timeout, label, json_out=True):
    """Runs one fresh process; returns its JSON (last stdout line) plus `wall_s` and the share of
    the machine's CPU time that other processes used meanwhile (`other_load`, 0..1). Without
    json_out, stdout goes to /dev/null and the result holds only those two."""
    s0, c0, t0 = cpu_busy_ticks(), children_cpu(), time.monotonic()
    try:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE if json_out else subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"  {label}: timed out: {shlex.join(cmd)}")
        return None
    wall, child = time.monotonic() - t0, children_cpu() - c0
    s1 = cpu_busy_ticks()
    if p.returncode != 0:
        log(f"  {label}: exit {p.returncode}: {shlex.join(cmd)}\n{p.stderr.strip()[-2000:]}")
        return None
    try:
        res = json.loads(p.stdout.strip().splitlines()[-1]) if json_out else {}
    except (IndexError, json.JSONDecodeError):
        log(f"  {label}: no JSON on stdout: {p.stdout[-500:]!r} {p.stderr[-500:]!r}")
        return None
    if s0 and s1:
        hz = os.sysconf("SC_CLK_TCK")
        cpus = os.cpu_count() or 1
        busy = (s1[0] - s0[0]) / hz
        res["other_load"] = min(1.0, max(0.0, (busy - child) / (wall * cpus)))
    res["wall_s"] = wall
    return res


def measure(system, cfg, args, env):
    """One measurement in a fresh process (SKIPPED when the system has no such model)."""
    cmd = command(system, cfg, args)
    if cmd is None:
        return SKIPPED
    res = run_child(cmd, child_env(system, args, env), max(120.0, 30 * args.seconds), system)
    if res is not None and "tokens_per_sec" not in res:
        log(f"  {system}: no tokens_per_sec in its JSON")
        return None
    return res


def measure_peak(args, env, system="peak"):
    res = run_child(command(system, None, args), child_env(system, args, env), 600.0, "sgemm")
    if res is not None and "gflops" not in res:
        log("  sgemm: no gflops in its JSON")
        return None
    return res


# ---------------------------------------------------------------- report

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fmt_rate(x):
    if x is SKIPPED:
        return "–"
    return "failed" if x is None else f"{x:,.0f}"


def fmt_ratio(a, b):
    if a in (None, SKIPPED) or b in (None, SKIPPED) or b == 0:
        return "–"
    return f"{a / b:.1f}x"


def ok(r):
    return r is not None and r is not SKIPPED


def openblas_note(args):
    """Where the OpenBLAS hints were, what the numpy children saw, and the kernel that ran."""
    present = {k: os.environ[k] for k in OPENBLAS_HINTS if k in os.environ}
    if not present:
        where = "not set in this environment"
    elif args.keep_openblas_env:
        where = ("set here (" + ", ".join(f"{k}={v}" for k, v in present.items())
                 + ") and kept (--keep-openblas-env)")
    else:
        where = ("set here (" + ", ".join(f"{k}={v}" for k, v in present.items())
                 + "), unset for the numpy and sgemm processes")
    return f"OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE {where}"


def report(args, results, peaks, started, elapsed, torch_peaks=()):
    """results[(config, system)] = list of per-round results (dict, None when failed, SKIPPED);
    peaks = list of per-round sgemm results (dict or None); torch_peaks likewise for torch.mm."""
    med = {}
    for key, runs in results.items():
        if runs and all(r is SKIPPED for r in runs):
            med[key] = SKIPPED
            continue
        rates = [r["tokens_per_sec"] for r in runs if ok(r)]
        med[key] = statistics.median(rates) if rates else None
    peak_rates = [p["gflops"] for p in peaks if p]
    peak = statistics.median(peak_rates) if peak_rates else None
    tpeak_rates = [p["gflops"] for p in torch_peaks if p]
    tpeak = statistics.median(tpeak_rates) if tpeak_rates else None

    def first(system, field):
        pool = peaks if system == "peak" else [r for (c, s), runs in results.items()
                                                if s == system for r in runs]
        for r in pool:
            if ok(r) and r.get(field) is not None:
                return r[field]
        return None

    P = args.threads
    lines = ["## Training throughput: rnnlm vs the book's numpy model vs PyTorch", ""]
    lines.append(f"- date: {started:%Y-%m-%d %H:%M} UTC")
    isa = first("ours", "isa")
    lines.append(f"- machine: {cpu_model()}, {os.cpu_count()} cores ({platform.machine()}"
                 + (f", rnnlm ISA {isa}" if isa else "") + ")")
    thr = [f"rnnlm --threads {P}" + (f" (ran {first('ours', 'threads')})" if "ours" in args.only else "")]
    if "numpy" in args.only:
        thr.append(f"numpy: OPENBLAS/OMP/MKL_NUM_THREADS={P} (BLAS reports {first('numpy', 'blas_threads')})")
    if "torch" in args.only:
        thr.append(f"torch.set_num_threads({P}) (reports {first('torch', 'threads')}), interop 1")
    lines.append(f"- threads: {P} for every system: " + "; ".join(thr))
    ver = [f"rnnlm {git_rev()}"]
    if "numpy" in args.only:
        ver.append(f"numpy {first('numpy', 'numpy')} with {first('numpy', 'blas')}")
    if "torch" in args.only:
        ver.append(f"torch {first('torch', 'torch')} ({first('torch', 'config')})")
    lines.append("- versions: " + "; ".join(ver))
    if not args.no_peak:
        if peak is None:
            lines.append("- sgemm peak: failed")
        else:
            lines.append(
                f"- sgemm peak: {peak:.1f} GFLOP/s = numpy float32 {args.peak_size}^3 matmul with "
                f"{P} threads ({first('peak', 'blas')}; median of {args.peak_repeats} products "
                f"per round, median over {len(peak_rates)} round(s): "
                + ", ".join(f"{x:.1f}" for x in peak_rates) + ")")
        if tpeak is not None:
            lines.append(
                f"- torch sgemm: {tpeak:.1f} GFLOP/s = torch.mm float32 {args.peak_size}^3 with "
                f"{P} threads ({torch_peaks[0]['blas'] if torch_peaks[0] else 'torch'}; median over "
                f"{len(tpeak_rates)} round(s): " + ", ".join(f"{x:.1f}" for x in tpeak_rates)
                + "): the second share in the GFLOP/s table")
    if "numpy" in args.only or not args.no_peak:
        lines.append(f"- {openblas_note(args)}")
    lines.append(f"- method: training step = forward + backward + SGD on synthetic ids, f32; each "
                 f"measurement a fresh process: {0.2 * args.seconds:g} s warm-up, {args.windows} "
                 f"windows of {0.8 * args.seconds / args.windows:g} s, median window; "
                 f"{args.rounds} interleaved round(s); the table shows the median over rounds "
                 f"(run took {elapsed / 60:.1f} min)")
    loads = [r["other_load"] for runs in results.values() for r in runs if ok(r) and "other_load" in r]
    loads += [p["other_load"] for p in peaks if p and "other_load" in p]
    if loads:
        worst = max(loads)
        note = "" if worst < 0.10 else " -- WARNING: the machine was busy, figures are unreliable"
        lines.append(f"- other load on the machine during measurements: max {100 * worst:.0f}%, "
                     f"median {100 * statistics.median(loads):.0f}% of all cores{note}")
    cmd = (f"bench/compare/run.sh --threads {P} --configs {','.join(args.configs)} "
           f"--rounds {args.rounds} --seconds {args.seconds:g}")
    if args.only != SYSTEMS:
        cmd += f" --only {','.join(args.only)}"
    if args.no_peak:
        cmd += " --no-peak"
    if args.keep_openblas_env:
        cmd += " --keep-openblas-env"
    lines.append(f"- command: `{cmd}`")
    lines.append("")

    head = ["config", "model", "V", "D", "H", "N", "T"] + [f"{TITLES[s]} tokens/s" for s in args.only]
    if "ours" in args.only:
        head += [f"rnnlm / {TITLES[s].split(' ')[0]}" for s in args.only if s != "ours"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|")
    for c in args.configs:
        cfg = CONFIGS[c]
        row = [f"{c} {cfg.label}", cfg.model(), str(cfg.V), str(cfg.D), str(cfg.H), str(cfg.N), str(cfg.T)]
        row += [fmt_rate(med[(c, s)]) for s in args.only]
        if "ours" in args.only:
            row += [fmt_ratio(med[(c, "ours")], med[(c, s)]) for s in args.only if s != "ours"]
        lines.append("| " + " | ".join(row) + " |")

    if peak:
        second = (f", then of torch's ({tpeak:.1f} GFLOP/s)" if tpeak else "")
        lines += ["", f"Achieved GFLOP/s (median tokens/s x FLOPs per token) and share of the "
                      f"sgemm peak ({peak:.1f} GFLOP/s){second}; FLOPs per token = "
                      f"6 * (sum over layers of (D_l*G*H + H*G*H) + H*V), see README.md:", ""]
        head = ["config", "MFLOP/token"] + [TITLES[s] for s in args.only]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for c in args.configs:
            fpt = CONFIGS[c].flops_per_token()
            row = [c, f"{fpt / 1e6:.2f}"]
            for s in args.only:
                m = med[(c, s)]
                if m in (None, SKIPPED):
                    row.append(fmt_rate(m))
                else:
                    g = m * fpt / 1e9
                    shares = f"{100 * g / peak:.0f}%" + (f", {100 * g / tpeak:.0f}%" if tpeak else "")
                    row.append(f"{g:.1f} ({shares})")
            lines.append("| " + " | ".join(row) + " |")

    lines += ["", "<details><summary>every measurement (tokens/s, other load)</summary>", ""]
    lines.append("| config | system | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |")
    lines.append("|---|---|" + "---:|" * args.rounds)
    if not args.no_peak:
        cells = ["failed" if not p else f"{p['gflops']:.1f} GFLOP/s"
                 + (f" ({100 * p['other_load']:.0f}%)" if "other_load" in p else "") for p in peaks]
        lines.append("| – | sgemm | " + " | ".join(cells) + " |")
        if tpeak is not None:
            cells = ["failed" if not p else f"{p['gflops']:.1f} GFLOP/s" for p in torch_peaks]
            lines.append("| – | torch sgemm | " + " | ".join(cells) + " |")
    for c in args.configs:
        for s in args.only:
            cells = []
            for r in results[(c, s)]:
                if r is SKIPPED:
                    cells.append("–")
                elif not r:
                    cells.append("failed")
                else:
                    load = f" ({100 * r['other_load']:.0f}%)" if "other_load" in r else ""
                    cells.append(f"{r['tokens_per_sec']:,.0f}{load}")
            lines.append(f"| {c} | {TITLES[s]} | " + " | ".join(cells) + " |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- scoring

def checkpoint_config(path):
    """The `config` metadata entry of an rnnlm safetensors checkpoint, as a dict."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n <= 0 or n > 100 << 20:
            sys.exit(f"run.py: {path}: not a safetensors file")
        header = json.loads(f.read(n))
    try:
        cfg = json.loads(header["__metadata__"]["config"])
    except (KeyError, TypeError, json.JSONDecodeError):
        sys.exit(f"run.py: {path} has no rnnlm `config` metadata entry")
    cfg.setdefault("cell", "rnn")
    cfg.setdefault("layers", 1)
    cfg.setdefault("tied", False)
    return cfg


def score_tokens(path):
    """Tokens `rnnlm score` scores: every line's words plus one <eos>."""
    with open(path, encoding="utf-8") as f:
        return sum(len(line.split()) + 1 for line in f)


def run_score(args, env):
    cfg = checkpoint_config(args.model)
    tokens = score_tokens(args.score)
    ours = [RNNLM, "score", "--model", args.model, args.score]
    empty = [RNNLM, "score", "--model", args.model, os.devnull]
    torch_cmd = [args.python, os.path.join(HERE, "torch_score.py"), args.score,
                 "--cell", cfg["cell"], "--vocab", str(cfg["vocab_size"]),
                 "--wordvec", str(cfg["wordvec_size"]), "--hidden", str(cfg["hidden_size"]),
                 "--layers", str(cfg["layers"]), "--threads", str(args.threads),
                 "--batch", str(args.score_batch), "--json"] + (["--tie"] if cfg["tied"] else [])
    started = datetime.datetime.now(datetime.timezone.utc)
    runs = {"ours": [], "ours_empty": [], "torch": []}
    for rnd in range(args.rounds):
        for key, cmd in (("ours_empty", empty), ("ours", ours), ("torch", torch_cmd)):
            if key != "torch" and "ours" not in args.only or key == "torch" and "torch" not in args.only:
                continue
            r = run_child(cmd, env, 3600.0, key, json_out=key == "torch")
            runs[key].append(r)
            if r:
                log(f"[round {rnd + 1}/{args.rounds}] {key:10s} {r['wall_s']:.3f} s wall"
                    + (f", {r['tokens_per_sec']:,.0f} tokens/s inside" if "tokens_per_sec" in r else "")
                    + (f", other load {100 * r['other_load']:.0f}%" if "other_load" in r else ""))

    def med(key, field):
        v = [r[field] for r in runs[key] if r and field in r]
        return statistics.median(v) if v else None

    lines = ["## Scoring throughput: `rnnlm score` vs torch_score.py", ""]
    lines.append(f"- date: {started:%Y-%m-%d %H:%M} UTC; machine: {cpu_model()}, "
                 f"{os.cpu_count()} cores; rnnlm {git_rev()}")
    lines.append(f"- model: {args.model}: {cfg['cell']}, {cfg['layers']} layer(s), "
                 f"V={cfg['vocab_size']}, D={cfg['wordvec_size']}, H={cfg['hidden_size']}, "
                 f"{'tied' if cfg['tied'] else 'untied'} (torch_score.py: same shape, random weights)")
    lines.append(f"- text: {args.score}: {tokens:,} tokens (words + one <eos> per line)")
    lines.append(f"- threads: {args.threads} (RAYON/OMP/MKL/OPENBLAS_NUM_THREADS; torch.set_num_threads); "
                 f"torch_score.py --batch {args.score_batch}; median over {args.rounds} round(s)")
    loads = [r["other_load"] for rs in runs.values() for r in rs if r and "other_load" in r]
    if loads:
        worst = max(loads)
        note = "" if worst < 0.10 else " -- WARNING: the machine was busy, figures are unreliable"
        lines.append(f"- other load: max {100 * worst:.0f}% of all cores{note}")
    lines.append(f"- command: `bench/compare/run.sh --score {args.score} --model {args.model} "
                 f"--threads {args.threads} --rounds {args.rounds}`")
    lines += ["", "| system | wall s | tokens/s (wall) | tokens/s (net) | net means |",
              "|---|---:|---:|---:|---|"]
    if "ours" in args.only:
        w, w0 = med("ours", "wall_s"), med("ours_empty", "wall_s")
        net = tokens / (w - w0) if w and w0 is not None and w > w0 else None
        lines.append(f"| rnnlm score | {fmt_s(w)} | {fmt_rate(tokens / w if w else None)} | "
                     f"{fmt_rate(net)} | minus the wall time of scoring an empty file "
                     f"({fmt_s(w0)} s: start-up, checkpoint load) |")
    if "torch" in args.only:
        w = med("torch", "wall_s")
        lines.append(f"| torch_score.py | {fmt_s(w)} | {fmt_rate(tokens / w if w else None)} | "
                     f"{fmt_rate(med('torch', 'tokens_per_sec'))} | its own timing: read, encode, "
                     f"score (no import, vocabulary or model building) |")
    lines.append("")
    failed = any(r is None for rs in runs.values() for r in rs)
    return "\n".join(lines), failed


def fmt_s(x):
    return "failed" if x is None else f"{x:.3f}"


def main():
    args = parse_args()
    if args.python is None:
        args.python = VENV_PY
    needs_py = [s for s in args.only if s != "ours"]
    if not args.score and not args.no_peak:
        needs_py.append("numpy")
    if "ours" in args.only:
        ensure_binary(args.build)
    if needs_py:
        ensure_venv(needs_py, None if args.python == VENV_PY else args.python)

    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(args.threads)
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    if args.score:
        text, failed = run_score(args, env)
        print(text)
        with open(args.out, "w") as f:
            f.write(text)
        log(f"written to {args.out}")
        return 1 if failed else 0

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    results = {(c, s): [] for c in args.configs for s in args.only}
    peaks, torch_peaks = [], []
    for rnd in range(args.rounds):
        if not args.no_peak:
            p = measure_peak(args, env)
            peaks.append(p)
            if p:
                load = f", other load {100 * p['other_load']:.0f}%" if "other_load" in p else ""
                log(f"[round {rnd + 1}/{args.rounds}] sgemm {args.peak_size}^3 {p['gflops']:.1f} "
                    f"GFLOP/s ({p['blas']}; OPENBLAS env {p['openblas_env']}{load})")
            if "torch" in args.only:
                p = measure_peak(args, env, "peak_torch")
                torch_peaks.append(p)
                if p:
                    log(f"[round {rnd + 1}/{args.rounds}] torch sgemm {args.peak_size}^3 "
                        f"{p['gflops']:.1f} GFLOP/s ({p['blas']})")
        for c in args.configs:
            for s in args.only:
                r = measure(s, CONFIGS[c], args, env)
                results[(c, s)].append(r)
                if ok(r):
                    load = f", other load {100 * r['other_load']:.0f}%" if "other_load" in r else ""
                    log(f"[round {rnd + 1}/{args.rounds}] {c} {CONFIGS[c].label:10s} {TITLES[s]:12s} "
                        f"{r['tokens_per_sec']:>12,.0f} tokens/s ({r['wall_s']:.1f} s{load})")
    text = report(args, results, peaks, started, time.monotonic() - t0, torch_peaks)
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    log(f"written to {args.out}")
    failed = (any(r is None for runs in results.values() for r in runs)
              or any(p is None for p in peaks + torch_peaks))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Side-by-side training throughput: rnnlm vs the book's numpy model vs PyTorch.

Runs, for each round and each configuration, `rnnlm bench`, numpy_rnnlm.py and
torch_rnnlm.py one after another, each in a fresh process with the same thread count,
then prints a Markdown table (median over rounds) and writes it to latest.md.

Standard library only: numpy and torch live in bench/compare/.venv, created on first use.
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

# name -> (label, V, D, H, N, T)
CONFIGS = {
    "A": ("seed", 418, 100, 100, 10, 5),
    "B": ("ptb-small", 10000, 100, 100, 20, 35),
    "C": ("ptb-medium", 10000, 650, 650, 20, 35),
    "D": ("big-batch", 10000, 256, 256, 128, 35),
}
SYSTEMS = ["ours", "numpy", "torch"]
TITLES = {"ours": "rnnlm", "numpy": "numpy (book)", "torch": "PyTorch"}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="threads for every system (default 2)")
    p.add_argument("--configs", default="A,B,C,D", help="comma list of A,B,C,D (default all)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--seconds", type=float, default=5.0,
                   help="per measurement: 20%% warm-up + WINDOWS timed windows (default 5)")
    p.add_argument("--windows", type=int, default=5, help="timed windows per measurement (default 5)")
    p.add_argument("--only", default="ours,numpy,torch",
                   help="restrict to some of ours,numpy,torch (comma list)")
    p.add_argument("--build", action="store_true",
                   help="run `cargo build --release --bin rnnlm` even if the binary exists")
    p.add_argument("--out", default=os.path.join(HERE, "latest.md"),
                   help="where to write the Markdown report (default bench/compare/latest.md)")
    a = p.parse_args()
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
    return a


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup

def ensure_binary(force):
    if os.path.exists(RNNLM) and not force:
        return
    log(f"building rnnlm: cargo build --release --bin rnnlm (in {ROOT})")
    subprocess.run(["cargo", "build", "--release", "--bin", "rnnlm"], cwd=ROOT, check=True)


def ensure_venv(systems):
    need = ["numpy"] + (["torch"] if "torch" in systems else [])
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
    _, V, D, H, N, T = cfg
    if system == "ours":
        warm = 0.2 * args.seconds
        window = 0.8 * args.seconds / args.windows
        return [RNNLM, "bench", "--vocab", str(V), "--wordvec", str(D), "--hidden", str(H),
                "--batch", str(N), "--time", str(T), "--threads", str(args.threads),
                "--mode", "train", "--json", "--warmup", f"{warm:g}",
                "--windows", str(args.windows), "--window", f"{window:g}"]
    script = os.path.join(HERE, f"{system}_rnnlm.py")
    return [VENV_PY, script, "--vocab", str(V), "--wordvec", str(D), "--hidden", str(H),
            "--batch", str(N), "--time", str(T), "--threads", str(args.threads),
            "--seconds", f"{args.seconds:g}", "--windows", str(args.windows), "--json"]


def measure(system, cfg, args, env):
    """Runs one fresh process; returns its JSON plus the share of the machine's CPU time
    that other processes used meanwhile (`other_load`, 0..1)."""
    cmd = command(system, cfg, args)
    s0, c0, t0 = cpu_busy_ticks(), children_cpu(), time.monotonic()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                           timeout=max(120.0, 30 * args.seconds))
    except subprocess.TimeoutExpired:
        log(f"  {system}: timed out: {shlex.join(cmd)}")
        return None
    wall, child = time.monotonic() - t0, children_cpu() - c0
    s1 = cpu_busy_ticks()
    if p.returncode != 0:
        log(f"  {system}: exit {p.returncode}: {shlex.join(cmd)}\n{p.stderr.strip()[-2000:]}")
        return None
    try:
        res = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        log(f"  {system}: no JSON on stdout: {p.stdout[-500:]!r} {p.stderr[-500:]!r}")
        return None
    if s0 and s1:
        hz = os.sysconf("SC_CLK_TCK")
        cpus = os.cpu_count() or 1
        busy = (s1[0] - s0[0]) / hz
        res["other_load"] = min(1.0, max(0.0, (busy - child) / (wall * cpus)))
    res["wall_s"] = wall
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
    return "failed" if x is None else f"{x:,.0f}"


def fmt_ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.1f}x"


def report(args, results, started, elapsed):
    """results[(config, system)] = list of per-round result dicts (None when failed)."""
    med = {}
    for key, runs in results.items():
        rates = [r["tokens_per_sec"] for r in runs if r]
        med[key] = statistics.median(rates) if rates else None

    def first(system, field):
        for (c, s), runs in results.items():
            for r in runs:
                if s == system and r and r.get(field) is not None:
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
    lines.append(f"- method: training step = forward + backward + SGD on synthetic ids, f32; each "
                 f"measurement a fresh process: {0.2 * args.seconds:g} s warm-up, {args.windows} "
                 f"windows of {0.8 * args.seconds / args.windows:g} s, median window; "
                 f"{args.rounds} interleaved round(s); the table shows the median over rounds "
                 f"(run took {elapsed / 60:.1f} min)")
    loads = [r["other_load"] for runs in results.values() for r in runs if r and "other_load" in r]
    if loads:
        worst = max(loads)
        note = "" if worst < 0.10 else " -- WARNING: the machine was busy, figures are unreliable"
        lines.append(f"- other load on the machine during measurements: max {100 * worst:.0f}%, "
                     f"median {100 * statistics.median(loads):.0f}% of all cores{note}")
    lines.append(f"- command: `bench/compare/run.sh --threads {P} --configs {','.join(args.configs)} "
                 f"--rounds {args.rounds} --seconds {args.seconds:g}"
                 + (f" --only {','.join(args.only)}" if args.only != SYSTEMS else "") + "`")
    lines.append("")

    head = ["config", "V", "D", "H", "N", "T"] + [f"{TITLES[s]} tokens/s" for s in args.only]
    if "ours" in args.only:
        head += [f"rnnlm / {TITLES[s].split(' ')[0]}" for s in args.only if s != "ours"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for c in args.configs:
        label, V, D, H, N, T = CONFIGS[c]
        row = [f"{c} {label}", str(V), str(D), str(H), str(N), str(T)]
        row += [fmt_rate(med[(c, s)]) for s in args.only]
        if "ours" in args.only:
            row += [fmt_ratio(med[(c, "ours")], med[(c, s)]) for s in args.only if s != "ours"]
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "<details><summary>every measurement (tokens/s, other load)</summary>", ""]
    lines.append("| config | system | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |")
    lines.append("|---|---|" + "---:|" * args.rounds)
    for c in args.configs:
        for s in args.only:
            cells = []
            for r in results[(c, s)]:
                if not r:
                    cells.append("failed")
                else:
                    load = f" ({100 * r['other_load']:.0f}%)" if "other_load" in r else ""
                    cells.append(f"{r['tokens_per_sec']:,.0f}{load}")
            lines.append(f"| {c} | {TITLES[s]} | " + " | ".join(cells) + " |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def main():
    args = parse_args()
    if "ours" in args.only:
        ensure_binary(args.build)
    if "numpy" in args.only or "torch" in args.only:
        ensure_venv(args.only)

    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(args.threads)
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    results = {(c, s): [] for c in args.configs for s in args.only}
    for rnd in range(args.rounds):
        for c in args.configs:
            for s in args.only:
                r = measure(s, CONFIGS[c], args, env)
                results[(c, s)].append(r)
                if r:
                    load = f", other load {100 * r['other_load']:.0f}%" if "other_load" in r else ""
                    log(f"[round {rnd + 1}/{args.rounds}] {c} {CONFIGS[c][0]:10s} {TITLES[s]:12s} "
                        f"{r['tokens_per_sec']:>12,.0f} tokens/s ({r['wall_s']:.1f} s{load})")
    text = report(args, results, started, time.monotonic() - t0)
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    log(f"written to {args.out}")
    failed = any(r is None for runs in results.values() for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The machine's sgemm yardstick: numpy's (OpenBLAS) float32 n x n x n matmul, in GFLOP/s.

    python peak.py --threads 2 --size 2048 --repeats 5 --json
    python peak.py --library torch ...   # torch.mm instead (MKL in the x86 wheels)

With --library torch the product is torch.mm into a preallocated output, with
torch.set_num_threads(--threads): MKL in the x86 wheels, the BLAS the PyTorch peer actually
runs on, so run.py reports both yardsticks.

One untimed product, then --repeats timed ones into a preallocated output; the median time
counts (2 n^3 FLOPs per product). The thread count is applied through OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS / MKL_NUM_THREADS before numpy is imported, as in numpy_rnnlm.py. The JSON
names the BLAS and the OpenBLAS kernel that ran (threadpoolctl's internal_api, version and
architecture) and the OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE this process saw (run.py unsets
both for it: see README.md).
"""

import argparse
import json
import os
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=2048, help="n of the n x n x n product")
    p.add_argument("--repeats", type=int, default=5, help="timed products (median counts)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--library", choices=("numpy", "torch"), default="numpy",
                   help="whose sgemm: numpy's BLAS (default) or torch.mm")
    a = p.parse_args(argv)
    if a.threads < 1 or a.size < 1 or a.repeats < 1:
        p.error("--threads, --size and --repeats must be >= 1")
    return a


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread variables on purpose)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from numpy_rnnlm import blas_info  # noqa: E402


def measure(n, repeats):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)  # untimed: thread pool start, page faults
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t)
    return [2 * n ** 3 / s / 1e9 for s in times], statistics.median(times)


def measure_torch(n, repeats, threads):
    import torch
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # untimed
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t)
    mkl = "MKL" if torch.backends.mkl.is_available() else "no MKL"
    info = f"torch {torch.__version__} torch.mm ({mkl})"
    return [2 * n ** 3 / s / 1e9 for s in times], statistics.median(times), info, torch.get_num_threads()


def main(args):
    if args.library == "torch":
        rates, median_s, blas, blas_threads = measure_torch(args.size, args.repeats, args.threads)
    else:
        rates, median_s = measure(args.size, args.repeats)
        blas, blas_threads = blas_info()
    res = {
        "system": "sgemm",
        "library": args.library,
        "size": args.size,
        "threads": args.threads,
        "blas_threads": blas_threads,
        "gflops": 2 * args.size ** 3 / median_s / 1e9,
        "repeat_gflops": rates,
        "numpy": np.__version__,
        "blas": blas,
        "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.library}: numpy {res['numpy']} ({blas}, {blas_threads} threads): float32 {args.size}^3 "
              f"matmul {res['gflops']:.1f} GFLOP/s (median of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))

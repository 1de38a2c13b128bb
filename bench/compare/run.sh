#!/bin/sh
# Training throughput of rnnlm vs the book's numpy model vs PyTorch; see README.md here.
# Options: --threads P --configs A,B,C,D --rounds R --seconds S --only ours,numpy,torch
exec python3 "$(dirname "$0")/run.py" "$@"

#!/bin/sh
# Training throughput of rnnlm vs the book's numpy model vs PyTorch; see README.md here.
# Options: --threads P --configs A,B,C,D,E,F,G,R --rounds R --seconds S --only ours,numpy,torch
#          --python PY --no-peak --keep-openblas-env; --score FILE --model M (scoring instead)
exec python3 "$(dirname "$0")/run.py" "$@"

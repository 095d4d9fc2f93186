"""What CPU kernel modules share."""

#: Options for every CPU kernel: numpy's error model (Python's raises on a zero
#: division, and its check stops LLVM vectorising any loop with a division) and
#: FMA contraction. Kernels that reduce add reassociation on top.
CPU_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}

#: Elementwise work below this many elements runs serially: waking Numba's
#: thread pool costs more than it saves there (2 cores, measured with asv).
PARALLEL_THRESHOLD = 1 << 18

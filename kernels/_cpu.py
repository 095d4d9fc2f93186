"""What CPU kernel modules share."""

#: Elementwise work below this many elements runs serially: waking Numba's
#: thread pool costs more than it saves there (2 cores, measured with asv).
PARALLEL_THRESHOLD = 1 << 18

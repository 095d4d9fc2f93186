"""The workloads behind ``gpunet bench`` and the asv suite's timers and peers.

- :mod:`.timing`: warm-up, medians of samples, alternating peer ratios.
- :mod:`.ceilings`: what the machine allows (a large product, a large copy).
- :mod:`.peers`: numpy, PyTorch and CuPy forms of the same work.
- :mod:`.workloads`: :class:`Bench`, the workloads, and their report rows.
"""

from .ceilings import copies, fastest, large_copy, matmul_gflops
from .peers import NumpyCD1, NumpyMLP, TorchMLP, cupy_module, numpy_dense_layer, torch_module
from .timing import BLAS_IDLE_SECONDS, Settings, median_ratio, median_time
from .workloads import WORKLOADS, Bench, Row, mlp

__all__ = [
    "BLAS_IDLE_SECONDS",
    "WORKLOADS",
    "Bench",
    "NumpyCD1",
    "NumpyMLP",
    "Row",
    "Settings",
    "TorchMLP",
    "copies",
    "cupy_module",
    "fastest",
    "large_copy",
    "matmul_gflops",
    "median_ratio",
    "median_time",
    "mlp",
    "numpy_dense_layer",
    "torch_module",
]

"""gpunet: neural networks on Numba kernels, for CUDA GPUs and CPUs.

``import gpunet as gn``; ops run where their inputs live (``gn.ops``), arrays
move with ``gn.to_device`` / ``gn.to_numpy``, and ``gn.set_device`` picks where
new arrays and layers go. Models are built from ``gn.nn`` layers and trained
with ``gn.losses`` and ``gn.optim`` (``model.fit``); ``gn.RBM`` is a
restricted Boltzmann machine with scikit-learn's interface.
"""

from . import data, datasets, dispatch, distributed, losses, nn, ops, optim, plot, random, training
from ._device import (
    Device,
    DeviceError,
    cuda_status,
    device,
    devices,
    get_device,
    set_device,
    to_device,
    to_numpy,
)
from ._sklearn import ConvergenceWarning
from .dbn import DBN, DBNClassifier
from .estimators import MLPClassifier, MLPRegressor
from .exceptions import NotFittedError
from .gemm import get_gemm, set_gemm
from .profiler import profile
from .random import manual_seed
from .rbm import RBM
from .serialization import load
from .threads import get_num_threads, set_num_threads, thread_info  # noqa: F401

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "DBN",
    "DBNClassifier",
    "Device",
    "DeviceError",
    "MLPClassifier",
    "MLPRegressor",
    "NotFittedError",
    "RBM",
    "cuda_status",
    "data",
    "datasets",
    "device",
    "devices",
    "dispatch",
    "distributed",
    "get_device",
    "get_gemm",
    "load",
    "losses",
    "manual_seed",
    "nn",
    "ops",
    "optim",
    "plot",
    "profile",
    "random",
    "set_device",
    "set_gemm",
    "to_device",
    "to_numpy",
    "training",
]

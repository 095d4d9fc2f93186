"""gpunet: neural networks on Numba kernels, for CUDA GPUs and CPUs."""

"""gpunet's Numba kernels, one module per op family.

Each module holds, in order: the plain-numpy reference (the executable spec),
the CPU ``@njit`` kernels, the CUDA ``@cuda.jit`` kernels and their launchers.
Kernels import only numpy, numba and each other, never the framework.
"""

"""Affinity and mask-decoding kernels (CUDA and CPU) and their Python loaders."""

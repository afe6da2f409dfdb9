"""BiMix spectral-branch kernels: the reference convolution (ground truth), the chunked
plain-torch forms, the project's Triton Chebyshev-window kernel, and the dispatch between them."""

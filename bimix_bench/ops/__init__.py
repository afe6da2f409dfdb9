"""Kernels and plain-torch reference ops shared by the models."""

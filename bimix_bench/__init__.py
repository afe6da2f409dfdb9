"""bimix-bench: matched-budget benchmarks of BiMix-LM against standard token mixers."""

__version__ = "0.1.0"

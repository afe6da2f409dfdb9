"""bimix-bench: matched-budget benchmarks of BiMix-LM against standard token mixers."""
import os as _os

from bimix_bench._layout import install_checkout_finder as _install_checkout_finder

__version__ = "0.1.0"

_install_checkout_finder(_os.path.dirname(__file__))

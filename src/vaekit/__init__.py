"""vaekit: variational autoencoders made practical."""

__version__ = "0.1.0"

"""Neural building blocks: encoder/decoder networks registered by architecture name."""

from vaekit.nn.networks import ACTIVATIONS, ARCHITECTURES, Architecture

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "Architecture"]

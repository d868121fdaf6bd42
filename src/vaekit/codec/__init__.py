"""Lossless compression with a trained model: codecs on an ANS coder, the bits-back glue, the ``.vkz`` container.

::

    codecs.py       composable (push, pop) codecs on constriction's ANS coder, and a bit-exact round-trip helper
    bitsback.py     BitsBackModel: a model made ready for bits-back coding (prepare() builds the tables)
    container.py    the .vkz file: magic, version, header, CRC-checked chunks
    compression.py  compress() / decompress(): arrays, IDX files, image folders and datasets to .vkz and back
"""

from vaekit.codec.bitsback import CodingConfig
from vaekit.codec.compression import CompressReport, DecompressReport, compress, decompress

__all__ = ["CodingConfig", "CompressReport", "DecompressReport", "compress", "decompress"]

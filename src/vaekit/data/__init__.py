"""Data: sources, readers, preprocessing, splits and streamed shards (no models here).

The public entry points: :func:`load_data` (a config -> train / val / test splits and the fitted preprocessing),
:func:`from_arrays` (in-memory arrays, prepared the same way), :func:`load_examples` (data for an existing model,
through its stored preprocessing) and :func:`download` (the IDX files of ``mnist`` / ``fashion-mnist``). New kinds
of data register a :class:`DataSource` in :data:`SOURCES` or a reader in :data:`vaekit.data.readers.READERS`.
"""

from vaekit.data import audio_source as _audio_source  # noqa: F401  (registers the "audio" source)
from vaekit.data import interactions as _interactions  # noqa: F401  (the "interactions" source and record)
from vaekit.data import shards as _shards  # noqa: F401  (registers the "shards" source)
from vaekit.data import text as _text  # noqa: F401  (registers the "text" source and preprocessing kind)
from vaekit.data.arrays import RawData
from vaekit.data.builtin import DATASETS, download, read_idx, resolve_data_dir
from vaekit.data.examples import DataBundle, ExampleSet
from vaekit.data.preprocessing import KINDS, PREPROCESSINGS, Preprocessing, preprocessing_from_dict
from vaekit.data.sources import SOURCES, DataSource, from_arrays, has_test_split, load_data, load_examples

__all__ = [
    "DATASETS",
    "KINDS",
    "PREPROCESSINGS",
    "SOURCES",
    "DataBundle",
    "DataSource",
    "ExampleSet",
    "Preprocessing",
    "RawData",
    "download",
    "from_arrays",
    "has_test_split",
    "load_data",
    "load_examples",
    "preprocessing_from_dict",
    "read_idx",
    "resolve_data_dir",
]

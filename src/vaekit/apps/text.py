"""The verbs for text models: sentences in, sentences out (``vaekit text ...``), and the ``text`` writer.

::

    sample_text        z ~ N(0, T_z^2 I) -> decode: greedy, ancestral at a temperature, or beam search
    reconstruct_text   sentence -> mean of q(z|x) -> decode, side by side with the input
    interpolate_text   two given sentences -> posterior means -> a path between them (linear or spherical)
                       -> decoded points: the homotopies of Bowman et al. 2016 (arXiv:1511.06349)
    shuffle_auroc      per-sentence NLL of sentences against word-shuffled copies of them: AUROC

Sentences given as strings are tokenized with the model's stored vocabulary (or subword tokenizer); words it does
not know become ``<unk>`` and are reported (``unknown`` in the results, a log line). The generic verbs work for
text models too: ``vaekit sample``, ``reconstruct``, ``interpolate`` write ``.txt`` files through the ``text``
writer (greedy decodes), ``embed`` writes the codes and ``score`` the per-sentence NLL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaekit.apps.interpolation import interpolate_latents
from vaekit.apps.scoring import anomaly_scores
from vaekit.apps.writers import WRITERS, Layout
from vaekit.data.text import PAD, TextPreprocessing
from vaekit.errors import ConfigError, DataError, OutputError
from vaekit.files import atomic_write_text
from vaekit.models import LatentVariableModel, as_model
from vaekit.models.inputs import examples_for
from vaekit.models.text import DECODINGS, TokenSequences

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedText:
    """Sentences as the model reads them: ids (B, T_max) on the model's device, and each sentence's words that the
    vocabulary lacks (read as ``<unk>``)."""

    ids: torch.Tensor
    unknown: list[list[str]]


@dataclass(frozen=True)
class ShuffleTest:
    """Sentences against word-shuffled copies of themselves, scored by their NLL (nats per sentence).

    Attributes
    ----------
    auroc
        Area under the ROC curve of the NLL (nats per sentence) separating the shuffled copies (positives) from the
        sentences: what ``vaekit score`` gives. Sentences differ in length far more than a shuffle changes them, so
        this mostly ranks lengths.
    auroc_per_token
        The same for the NLL per token (``<eos>`` included).
    auroc_relative
        The same for the NLL minus the NLL under the training text's unigram model, -log p(x) + log p_unigram(x):
        a likelihood ratio (Ren et al. 2019, arXiv:1906.02845) that cancels what a sentence and its copy share, the
        bag of words, and leaves word order.
    sentences
        Sentences scored (those of at least two words), each with one shuffled copy.
    k
        Importance samples of the NLL (1 for a model without latent variable: exact).
    nll_original, nll_shuffled
        Mean NLL of the sentences and of their copies, nats per sentence.
    """

    auroc: float
    auroc_per_token: float
    auroc_relative: float
    sentences: int
    k: int
    nll_original: float
    nll_shuffled: float


def text_record(model: LatentVariableModel) -> TextPreprocessing:
    """The model's text preprocessing record, or ConfigError for a model that does not read text."""
    record = model.preprocessing
    if not isinstance(record, TextPreprocessing):
        raise ConfigError(
            f"this is a {model.family!r} model of {getattr(record, 'kind', 'unknown')} data; the text verbs need a "
            "model trained on text (vaekit train --preset ptb --data DIR)"
        )
    return record


def encode_text(model: LatentVariableModel, sentences: Sequence[str]) -> EncodedText:
    """Token ids of ``sentences`` under the model's vocabulary, and the words each one has that the model lacks.

    Raises
    ------
    ConfigError
        A model that does not read text, or no sentences.
    DataError
        An empty sentence.
    """
    record = text_record(model)
    if isinstance(sentences, str) or not sentences:
        raise ConfigError("give a list of one or more sentences")
    lines = [" ".join(str(s).split()) for s in sentences]
    for i, line in enumerate(lines):
        if not line:
            raise DataError(f"sentence {i} is empty; give at least one word")
    raw, stats = record.encode(lines, "the given sentences")
    unknown = record.unknown_words(lines)
    if stats.oov:
        logger.info("%d word(s) the model does not know read as <unk>: %s", stats.oov,
                    ", ".join(sorted({w for words in unknown for w in words})[:20]))
    return EncodedText(torch.from_numpy(raw).long().to(model.device), unknown)


def _decode(model: LatentVariableModel, z: torch.Tensor, decoding: str, temperature: float, beam_size: int,
            seed: int) -> list[str]:
    px_z = model.decode(z)
    if not isinstance(px_z, TokenSequences):
        raise ConfigError(f"this {model.family!r} model does not decode text; use a model of the text family")
    generator = torch.Generator(device=model.device).manual_seed(seed)
    ids = px_z.generate(decoding, temperature=temperature, beam_size=beam_size, generator=generator)
    return text_record(model).decode(ids.cpu())


def _write_lines(out: str | Path | None, lines: list[str]) -> None:
    if out is None:
        return
    if Path(out).suffix.lower() != ".txt":
        raise OutputError(f"text output {str(out)!r} must be a .txt file; pass --out NAME.txt")
    atomic_write_text(out, "".join(f"{line}\n" for line in lines))


@torch.no_grad()
def sample_text(
    model: LatentVariableModel | str | Path,
    n: int = 10,
    *,
    decoding: str = "greedy",
    temperature: float = 1.0,
    prior_temperature: float = 1.0,
    beam_size: int = 5,
    seed: int = 0,
    out: str | Path | None = None,
) -> list[str]:
    """Draw ``n`` sentences: z from the prior (its spread scaled by ``prior_temperature``), decoded.

    Parameters
    ----------
    decoding
        ``greedy`` (the most probable word at each step), ``sample`` (each word drawn at ``temperature``) or
        ``beam`` (beam search of width ``beam_size``); a language model (no latent) decodes its one distribution.
    seed
        Seed of the latent draw and of ``sample`` decoding.
    out
        A ``.txt`` file for the sentences, one a line.

    Returns
    -------
    list of str
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    if not 0 < prior_temperature < float("inf"):
        raise ConfigError(f"prior temperature must be a positive finite number, got {prior_temperature}")
    model = as_model(model)
    model.eval()
    text_record(model)
    z = model.sample_latents(n, prior_temperature, torch.Generator(device=model.device).manual_seed(seed))
    sentences = _decode(model, z, decoding, temperature, beam_size, seed + 1)
    _write_lines(out, sentences)
    return sentences


@torch.no_grad()
def reconstruct_text(
    model: LatentVariableModel | str | Path,
    sentences: Sequence[str] | None = None,
    *,
    data: str | None = None,
    n: int = 5,
    decoding: str = "greedy",
    beam_size: int = 5,
    data_dir: str | None = None,
    out: str | Path | None = None,
) -> list[tuple[str, str]]:
    """Encode sentences (given, or the first ``n`` of ``data``, default the model's test text) to their posterior
    means and decode them: (input, decode) pairs. ``out``: a ``.txt`` file, each input then ``  -> decode``."""
    model = as_model(model)
    model.eval()
    if model.latent_dim == 0:  # its decode ignores the input: every sentence would come out the same
        raise ConfigError("this language model has no latent variable to reconstruct from; use a sentence VAE")
    record = text_record(model)
    if sentences is not None:
        x = encode_text(model, sentences).ids
    else:
        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        examples = examples_for(model, data, data_dir)
        x = examples.batch(np.arange(min(n, len(examples)))).to(model.device)
    z = model.encode(x).mean
    pairs = list(zip(record.decode(x.cpu()), _decode(model, z, decoding, 1.0, beam_size, 0), strict=True))
    _write_lines(out, [f"{a}\n  -> {b}" for a, b in pairs])
    return pairs


@torch.no_grad()
def interpolate_text(
    model: LatentVariableModel | str | Path,
    a: str,
    b: str,
    *,
    steps: int = 5,
    method: str = "linear",
    decoding: str = "greedy",
    beam_size: int = 5,
    out: str | Path | None = None,
) -> list[str]:
    """Decode ``steps`` points (both ends included) on a path between the posterior means of sentences ``a`` and
    ``b`` (a homotopy, Bowman et al. 2016). ``method``: ``linear`` or ``spherical``.

    Raises
    ------
    ConfigError
        A model without latent variable (nothing to walk), ``steps < 2``, an unknown method or decoding.
    """
    model = as_model(model)
    model.eval()
    if model.latent_dim == 0:
        raise ConfigError("this language model has no latent variable to walk; interpolate with a sentence VAE")
    x = encode_text(model, [a, b]).ids
    z_ends = model.encode(x).mean  # (2, L)
    path = interpolate_latents(z_ends[0], z_ends[1], steps, method)  # (steps, L)
    sentences = _decode(model, path, decoding, 1.0, beam_size, 0)
    _write_lines(out, sentences)
    return sentences


@torch.no_grad()
def shuffle_auroc(
    model: LatentVariableModel | str | Path,
    data: str | None = None,
    *,
    k: int = 100,
    seed: int = 0,
    data_dir: str | None = None,
    limit: int | None = None,
) -> ShuffleTest:
    """Score every sentence of ``data`` (default the model's test text) of two words or more, and one copy of each
    with its words shuffled (seeded), by the importance-weighted NLL with ``k`` samples (exact for a language
    model); the AUROCs of the scores telling the copies from the sentences (see :class:`ShuffleTest`). ``limit``:
    the first sentences only."""
    from sklearn.metrics import roc_auc_score

    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 (sentences scored), got {limit}")
    model = as_model(model)
    model.eval()
    record = text_record(model)
    x = examples_for(model, data, data_dir).tensor()
    x = x[(x != PAD).sum(1) >= 3][:limit]  # two words and <eos> at least: something to shuffle
    if len(x) == 0:
        raise DataError("no sentence of two words or more to shuffle; give longer sentences")
    generator = torch.Generator().manual_seed(seed)
    shuffled = x.clone()
    for row, length in zip(shuffled, (x != PAD).sum(1).tolist(), strict=True):
        words = length - 1  # the <eos> stays last
        row[:words] = row[:words][torch.randperm(words, generator=generator)]
    k = 1 if model.latent_dim == 0 else k
    original = anomaly_scores(model, x.to(model.device), "iwae", k=k, seed=seed).double().numpy()
    copies = anomaly_scores(model, shuffled.to(model.device), "iwae", k=k, seed=seed).double().numpy()
    labels = np.r_[np.zeros(len(original)), np.ones(len(copies))]
    nll = np.r_[original, copies]
    tokens = np.tile((x != PAD).sum(1).double().numpy(), 2)
    unigram = np.tile(record.unigram_log_prob(x).numpy(), 2)  # a shuffle keeps the bag of words
    return ShuffleTest(
        auroc=float(roc_auc_score(labels, nll)), auroc_per_token=float(roc_auc_score(labels, nll / tokens)),
        auroc_relative=float(roc_auc_score(labels, nll + unigram)), sentences=len(x), k=k,
        nll_original=float(original.mean()), nll_shuffled=float(copies.mean()),
    )


class _TextWriter:
    """Examples (N, T) of token ids as a ``.txt`` file, one sentence a line (with the layout's row or column
    caption in front when it has one: ``originals: ...``)."""

    suffixes: tuple[str, ...] = (".txt",)

    def write(self, model: LatentVariableModel, x: np.ndarray, out: Path, layout: Layout) -> Path:
        lines = text_record(model).decode(np.asarray(x).round().astype(np.int64))
        captions = [layout.row_labels[i // layout.ncol] if i // layout.ncol < len(layout.row_labels) else ""
                    for i in range(len(lines))]
        if not any(captions) and layout.col_labels:
            captions = [layout.col_labels[i % layout.ncol] if i % layout.ncol < len(layout.col_labels) else ""
                        for i in range(len(lines))]
        atomic_write_text(out, "".join(f"{c}: {line}\n" if c else f"{line}\n" for c, line in
                                       zip(captions, lines, strict=True)))
        return out


WRITERS.register("text")(_TextWriter())

__all__ = ["DECODINGS", "EncodedText", "ShuffleTest", "encode_text", "interpolate_text", "reconstruct_text",
           "sample_text", "shuffle_auroc", "text_record"]

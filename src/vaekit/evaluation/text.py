"""What ``vaekit evaluate`` reports for text models (an entry of :data:`vaekit.evaluation.report.REPORT_EXTENSIONS`).

::

    tokens          sum over sentences of (words + 1): every sentence's one <eos> counts, <bos> and padding do not
    perplexity      exp(total NLL / tokens), the NLL the importance-weighted estimate with k samples (exact for a
                    language model); also from the -ELBO, an upper bound
    bits/token      total NLL / (tokens ln 2)
    OOV words       words of the evaluated text that the model's vocabulary lacks, read as <unk>
    I(x; z)         the mutual information between a sentence and its code under q (Hoffman and Johnson 2016;
                    estimated as in He et al. 2019, arXiv:1901.05534): E_x E_q(z|x)[log q(z|x)] - E_q(z)[log q(z)],
                    with q(z) the mixture of the N posteriors of the evaluated sentences, one draw per sentence;
                    at most log N

The per-"dimension" figures of the generic report (bits/dim over padded positions, squared error of token ids)
mean nothing for text and are left out (``null`` in the JSON).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vaekit.data.text import PAD
from vaekit.evaluation.report import REPORT_EXTENSIONS, EvalReport
from vaekit.models import LatentVariableModel

MI_CHUNK = 128  # sampled codes whose density under all N posteriors is computed at once


@torch.no_grad()
def mutual_information(
    model: LatentVariableModel, x: torch.Tensor, seed: int = 0, batch_size: int = 256
) -> float:
    """An estimate of I(x; z) in nats under the aggregate posterior of the sentences ``x`` (N, T).

    ``E_x E_q(z|x)[log q(z|x)]`` is the mean negative entropy of the Gaussian posteriors (exact);
    ``E_q(z)[log q(z)]`` averages ``log (1/N) sum_n q(z_i | x_n)`` over one draw z_i ~ q(z | x_i) per sentence
    (seeded by ``seed``). The estimate lies in [0, log N] up to Monte Carlo error (He et al. 2019, arXiv:1901.05534).
    0 for a model without latent variable.
    """
    if model.latent_dim == 0 or len(x) == 0:
        return 0.0
    means, scales = [], []
    for start in range(0, len(x), batch_size):
        qz_x = model.encode(x[start : start + batch_size].to(model.device))
        means.append(qz_x.mean.double().cpu())
        scales.append(qz_x.stddev.double().cpu())
    mu, sigma = torch.cat(means), torch.cat(scales)  # (N, L) each
    n, latent = mu.shape
    log_sigma = sigma.log().sum(1)  # (N,)
    neg_entropy = (-0.5 * latent * (1 + math.log(2 * math.pi)) - log_sigma).mean()
    generator = torch.Generator().manual_seed(seed)
    z = mu + sigma * torch.randn(mu.shape, generator=generator, dtype=mu.dtype)  # (N, L), z_i ~ q(z | x_i)
    log_qz = []
    for start in range(0, n, MI_CHUNK):
        zc = z[start : start + MI_CHUNK, None, :]  # (c, 1, L)
        log_density = (-0.5 * (((zc - mu) / sigma) ** 2).sum(-1) - log_sigma
                       - 0.5 * latent * math.log(2 * math.pi))  # (c, N): log q(z_i | x_n)
        log_qz.append(torch.logsumexp(log_density, dim=1) - math.log(n))
    return float(neg_entropy - torch.cat(log_qz).mean())


class TextReport:
    """Perplexity, bits per token, token and out-of-vocabulary counts and I(x; z) (see the module docstring)."""

    omits: tuple[str, ...] = ("bits_per_dim", "elbo_bits_per_dim", "recon_mse")

    def measure(
        self, model: LatentVariableModel, x: torch.Tensor, examples: Any, report: EvalReport, seed: int
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        n = len(x)
        tokens = int((x != PAD).sum())
        nll, neg_elbo = report.nll_nats * n, -report.elbo * n  # totals, nats
        stats = getattr(examples, "stats", None)
        mi = mutual_information(model, x, seed)
        extras: dict[str, Any] = {
            "sentences": n,
            "tokens": tokens,
            "perplexity": math.exp(nll / tokens),
            "perplexity_elbo": math.exp(neg_elbo / tokens),
            "bits_per_token": nll / (tokens * math.log(2)),
            "elbo_bits_per_token": neg_elbo / (tokens * math.log(2)),
            "mutual_information": mi,
            "mutual_information_max": math.log(n) if n else 0.0,
            **({} if stats is None else {"oov_words": stats.oov, "truncated_lines": stats.truncated,
                                         "empty_lines": stats.empty_lines}),
        }
        how = "exact" if model.latent_dim == 0 else f"IWAE k={report.k}"
        whitespace = getattr(model.preprocessing, "tokenizer", "whitespace") == "whitespace"
        units = "words" if whitespace else "subword pieces"  # perplexity is per token: per piece for BPE
        rows = [
            ("tokens", f"{tokens:,} in {n:,} sentences ({units} + one <eos> each)"),
            ("perplexity (NLL)", f"{extras['perplexity']:.2f}  exp(NLL total / tokens), {how}"),
            ("perplexity (-ELBO)", f"{extras['perplexity_elbo']:.2f}"),
            ("bits/token (NLL)", f"{extras['bits_per_token']:.4f}"),
            ("mutual information", f"{mi:.3f} nats  I(x; z) under q, over {n:,} sentences (at most "
                                   f"log N = {extras['mutual_information_max']:.2f})"),
        ]
        if stats is not None:
            rows.append(("out-of-vocabulary", f"{stats.oov:,} words read as <unk>; {stats.truncated:,} lines "
                                              f"truncated, {stats.empty_lines:,} empty lines skipped"))
        return extras, rows


REPORT_EXTENSIONS.register("text")(TextReport())

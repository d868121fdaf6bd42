"""The sentence VAE: a family of the model contract over token sequences (Bowman et al. 2016, arXiv:1511.06349).

::

    x (B, T) ids ──embedding──> bidirectional LSTM ──last states (B, 2H)──> (mu, log sigma^2) (B, L)   encode(x)
                                                        [BN-VAE: mu = gamma BN(mu) + b]   q(z|x) = N(mu, sigma^2)
    z (N, L) ──> h_0, c_0 = W z                                                                       decode(z)
    <bos> w_1 .. w_{n} ──[word dropout]──embedding ++ z──> LSTM ──> softmax over the vocabulary
                                                        p(x|z) = prod_t p(w_t | w_<t, z),  w_{n+1} = <eos>

``decode(z)`` is a :class:`TokenSequences` distribution: ``log_prob(x)`` is the teacher-forced sum over the
tokens of each sentence, its ``<eos>`` included (nats per sentence); ``mean`` is the greedy decode (the verbs'
"decoded mean"); ``sample()`` draws ancestrally; :meth:`TokenSequences.generate` decodes greedily, ancestrally at a
temperature, or by beam search. ``prior()`` is N(0, I).

``model.latent_dim = 0`` is the language-model baseline: the same decoder with no latent variable. Its posterior
and prior live on an empty space, so its KL is 0 and its ELBO and every importance-weighted bound equal the exact
log-likelihood; it trains, evaluates and samples through the same code as the VAE.

The remedies for posterior collapse are settings: word dropout (``model.word_dropout``), KL annealing (linear:
``objective.kl_warmup_steps``; cyclical: ``objective.kl_cycles``), free bits (``objective.free_bits``) and BN-VAE
(``model.posterior_batchnorm``: a batch normalisation with fixed scale gamma of the posterior means, Zhu et al.
2020, arXiv:2004.12585, which keeps the expected KL above about L gamma^2 / 2).

The output layer is a full softmax or, with ``model.softmax_cutoffs``, an adaptive softmax (Grave et al. 2016,
arXiv:1609.04309): both are normalised distributions over the whole vocabulary.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution, constraints
from torch.nn import functional as F

from vaekit.config import ModelConfig
from vaekit.data.text import BOS, EOS, FIRST_OUTPUT, PAD, SPECIAL_TOKENS, UNK, TextPreprocessing
from vaekit.errors import ConfigError, DataError
from vaekit.models.contract import ContractExample, LatentVariableModel
from vaekit.models.families import FAMILIES
from vaekit.models.posteriors import DiagonalGaussian
from vaekit.models.priors import PRIORS

logger = logging.getLogger(__name__)

TOKEN_CHUNK = 8192  # tokens whose vocabulary logits are held at once when no gradient is needed
ROW_CHUNK = 1024  # sequences run through the decoder at once when no gradient is needed
DECODINGS = ("greedy", "sample", "beam")


class TokenSequences(Distribution):
    """p(x|z) over token sequences for N latents: batch shape (N,), event shape (T_max,).

    Parameters
    ----------
    model
        The sentence VAE whose decoder this is.
    z
        (N, L) latents ((N, 0) for the language model).
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.integer_interval(0, 2**31 - 1)

    def __init__(self, model: SentenceVAE, z: torch.Tensor) -> None:
        self.model, self.z = model, z
        super().__init__(torch.Size([z.shape[0]]), torch.Size(model.data_shape), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats per sentence: the sum over its tokens and its ``<eos>`` (padding ignored). (N,)."""
        return self.model.sequence_log_prob(self.z, value)

    @property
    def mean(self) -> torch.Tensor:
        """The greedy decode (N, T_max): the most probable token at every step, ``<pad>`` after ``<eos>``. (A sequence
        distribution has no mean; the verbs' "decoded mean" of text is this.)"""
        return self.generate("greedy")

    @property
    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        """Ancestral draws (*sample_shape, N, T_max) from torch's global random numbers."""
        count = math.prod(sample_shape)
        draws = [self.generate("sample") for _ in range(count)] if count else []
        return torch.stack(draws).reshape(*sample_shape, *self.batch_shape, *self.event_shape)

    def generate(
        self, decoding: str = "greedy", *, temperature: float = 1.0, beam_size: int = 5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Decode each latent into a token sequence (N, T_max), ``<pad>`` after ``<eos>``.

        Parameters
        ----------
        decoding
            ``greedy`` (the most probable token at each step), ``sample`` (ancestral: each token drawn from
            p(w_t | w_<t, z) at ``temperature``) or ``beam`` (beam search for the most probable sequence, width
            ``beam_size``).
        temperature
            ``sample``: the logits are divided by it (below 1: more typical, above 1: more varied).
        generator
            ``sample``: the random numbers (torch's global ones when ``None``).
        """
        if decoding not in DECODINGS:
            raise ConfigError(f"unknown decoding {decoding!r}; choose one of: {', '.join(DECODINGS)}")
        if not 0 < temperature < math.inf:
            raise ConfigError(f"temperature must be a positive finite number, got {temperature}")
        if decoding == "beam":
            if beam_size < 1:
                raise ConfigError(f"beam_size must be at least 1, got {beam_size}")
            return self.model.beam_search(self.z, beam_size)
        return self.model.step_decode(self.z, decoding == "sample", temperature, generator)


class _Decoder(nn.Module):
    """The autoregressive decoder: z -> initial LSTM state, [w_{t-1}; z] -> LSTM -> output layer."""

    def __init__(self, config: ModelConfig, vocab_size: int, hidden: int) -> None:
        super().__init__()
        latent = config.latent_dim
        self.to_state = nn.Linear(latent, 2 * hidden) if latent else None
        self.lstm = nn.LSTM(config.embedding_dim + latent, hidden, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        cutoffs = [c for c in config.softmax_cutoffs if FIRST_OUTPUT < c < vocab_size]
        if len(cutoffs) < len(config.softmax_cutoffs):  # a preset's cutoffs on a smaller vocabulary
            logger.info("model.softmax_cutoffs %s: those outside the vocabulary of %d tokens are not used",
                        list(config.softmax_cutoffs), vocab_size)
        classes = vocab_size - FIRST_OUTPUT  # <pad> and <bos> are never predicted
        if cutoffs:
            self.output: nn.Module = nn.AdaptiveLogSoftmaxWithLoss(
                hidden, classes, [c - FIRST_OUTPUT for c in cutoffs], div_value=4.0)
        else:
            self.output = nn.Linear(hidden, classes)

    def initial_state(self, z: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_0, c_0), each (1, N, H): a linear map of z (tanh for h), zeros for the language model."""
        if self.to_state is None:
            zeros = z.new_zeros(1, z.shape[0], hidden)
            return zeros, zeros
        h, c = self.to_state(z).chunk(2, dim=-1)  # (N, H) each
        return torch.tanh(h).unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()

    def token_nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """-log p(target | state) in nats for states h (M, H) and target token ids (M,)."""
        classes = targets - FIRST_OUTPUT
        if isinstance(self.output, nn.AdaptiveLogSoftmaxWithLoss):
            return -self.output(h, classes).output
        return F.cross_entropy(self.output(h), classes, reduction="none")

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """log p(w | state) for every token id w, states h (M, H): (M, V), -inf for <pad> and <bos>."""
        if isinstance(self.output, nn.AdaptiveLogSoftmaxWithLoss):
            log_p = self.output.log_prob(h)
        else:
            log_p = F.log_softmax(self.output(h), dim=-1)
        return torch.cat([log_p.new_full((len(log_p), FIRST_OUTPUT), -math.inf), log_p], dim=-1)


@FAMILIES.register("text")
class SentenceVAE(LatentVariableModel):
    """Sentence VAE with an LSTM encoder and an autoregressive LSTM decoder (Bowman et al. 2016, arXiv:1511.06349);
    with ``latent_dim = 0`` the LSTM language model it is judged against.

    Parameters
    ----------
    config
        ``latent_dim`` (0: the language model), ``hidden_dims`` (the LSTM width H, or (encoder, decoder) widths),
        ``embedding_dim``, ``vocab_size`` (tokens, the special ones included), ``word_dropout``, ``dropout``,
        ``softmax_cutoffs``, ``posterior_batchnorm``.
    data_shape
        ``(T_max,)``: the longest sentence in tokens, ``<eos>`` included.
    """

    family = "text"
    allows_no_latent: ClassVar[bool] = True

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = dataclasses.replace(config, family=self.family)
        self.data_shape = tuple(int(d) for d in data_shape)
        if len(self.data_shape) != 1:
            raise ConfigError(f"the text family models token sequences of shape (T,), not {self.data_shape}; "
                              "train it on text (.txt files)")
        if config.vocab_size < len(SPECIAL_TOKENS) + 1:
            raise ConfigError(f"model.vocab_size={config.vocab_size} leaves no words beside the special tokens; "
                              "leave it at 0 to take it from the training text")
        if config.num_classes:
            raise ConfigError("the text family is not conditional; set model.num_classes=0")
        if config.latent_density:
            raise ConfigError("model.latent_density is for the vae family; set it to 0 for a text model")
        self.vocab_size = config.vocab_size
        hidden = tuple(config.hidden_dims) or (256,)
        self.encoder_hidden, self.decoder_hidden = hidden[0], hidden[-1]
        latent = config.latent_dim
        self.conditioning = None
        self.likelihood = None  # type: ignore[assignment]  # p(x|z) is the decoder's own (TokenSequences)
        self.embedding = nn.Embedding(self.vocab_size, config.embedding_dim, padding_idx=PAD)
        self.embedding_dropout = nn.Dropout(config.dropout)
        if latent:
            self.encoder_forward = nn.LSTM(config.embedding_dim, self.encoder_hidden, batch_first=True)
            self.encoder_backward = nn.LSTM(config.embedding_dim, self.encoder_hidden, batch_first=True)
            self.to_posterior = nn.Linear(2 * self.encoder_hidden, 2 * latent)
        self.mean_norm = nn.BatchNorm1d(latent, affine=False) if latent and config.posterior_batchnorm else None
        self.mean_shift = nn.Parameter(torch.zeros(latent)) if self.mean_norm is not None else None
        self.decoder = _Decoder(config, self.vocab_size, self.decoder_hidden)
        self.latent_prior = PRIORS.get(config.prior)(latent)

    @classmethod
    def for_data(cls, config: ModelConfig, preprocessing: Any) -> ModelConfig:
        """The config with ``vocab_size`` taken from the text's tokenizer (when 0); DataError for other data."""
        if not isinstance(preprocessing, TextPreprocessing):
            raise DataError(
                f"the text family models token sequences, but the data ({getattr(preprocessing, 'source', '?')}) is "
                f"{getattr(preprocessing, 'kind', 'array')} data; give it a .txt file or a folder of text files"
            )
        if config.vocab_size and config.vocab_size != preprocessing.vocab_size:
            raise ConfigError(
                f"model.vocab_size={config.vocab_size} but the text's tokenizer has {preprocessing.vocab_size} tokens; "
                "leave model.vocab_size at 0 to take it from the data"
            )
        return dataclasses.replace(config, vocab_size=preprocessing.vocab_size)

    def modality(self) -> str:
        return "text"

    # -- inputs --------------------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """DataError unless ``x`` is (B, T) token ids with T <= T_max, in the vocabulary, padding only after
        each sentence's end."""
        if x.dim() != 2 or not 1 <= x.shape[1] <= self.data_shape[0]:
            raise DataError(
                f"the text model takes token ids of shape (B, T) with T <= {self.data_shape[0]}, got "
                f"{tuple(x.shape)}; give it text (a .txt file), not arrays"
            )
        if x.is_floating_point() and not bool((x == x.round()).all()):
            raise DataError("token ids must be whole numbers; give the model text, not real-valued arrays")
        if len(x) and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
            raise DataError(f"token ids lie in [{int(x.min())}, {int(x.max())}], outside the vocabulary 0.."
                            f"{self.vocab_size - 1}; the text was encoded with another vocabulary")
        words = x != PAD
        if bool((words[:, 1:] & ~words[:, :-1]).any()) or not bool(words[:, 0].all()):
            raise DataError("a sentence is empty or has padding (id 0) before its end; give each sentence's tokens "
                            "first, then its <eos>, then padding")

    @staticmethod
    def lengths(x: torch.Tensor) -> torch.Tensor:
        """Tokens of each sentence, ``<eos>`` included (everything but the padding): (B,) int64."""
        return (x != PAD).sum(1)

    def _trim(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` as int64 cut after its longest sentence, and the lengths (B,)."""
        x = x.long()
        lengths = self.lengths(x)
        longest = max(int(lengths.max()), 1) if len(x) else 1
        return x[:, :longest], lengths

    # -- the contract --------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DiagonalGaussian:
        """q(z|x) = N(mu, diag sigma^2) for token ids x (B, T): batch shape (B,), event shape (L,)."""
        x, lengths = self._trim(x)
        latent = self.config.latent_dim
        if not latent:
            empty = x.new_zeros((x.shape[0], 0), dtype=self.embedding.weight.dtype)
            return DiagonalGaussian(empty, empty + 1)
        last = (lengths - 1).clamp(min=0)  # (B,) position of each sentence's <eos>
        positions = torch.arange(x.shape[1], device=x.device)
        # each sentence reversed within its length, padding left in place: the backward LSTM's input
        reverse = torch.where(positions < lengths[:, None], last[:, None] - positions, positions)
        states = []
        for lstm, tokens in ((self.encoder_forward, x), (self.encoder_backward, x.gather(1, reverse))):
            out, _ = lstm(self.embedding(tokens))  # (B, T, H); no dropout: q(z|x) is a function of x
            states.append(out[torch.arange(len(x), device=x.device), last])  # (B, H) at the sentence's end
        mu, log_var = self.to_posterior(torch.cat(states, dim=-1)).chunk(2, dim=-1)  # (B, L) each
        if self.mean_norm is not None and self.mean_shift is not None:
            mu = self._normalise_means(mu)
        return DiagonalGaussian(mu, torch.exp(0.5 * log_var))

    def _normalise_means(self, mu: torch.Tensor) -> torch.Tensor:
        """BN-VAE: gamma * BN(mu) + b with fixed gamma (batch statistics in training, running ones otherwise)."""
        norm = self.mean_norm
        assert norm is not None and self.mean_shift is not None  # internal: called only with BN-VAE
        batch_stats = self.training and mu.shape[0] > 1
        normed = F.batch_norm(mu, norm.running_mean, norm.running_var, training=batch_stats,
                              momentum=norm.momentum if norm.momentum is not None else 0.1, eps=norm.eps)
        return self.config.posterior_batchnorm * normed + self.mean_shift

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> TokenSequences:
        """p(x|z) for z (N, L): a distribution over token sequences, batch shape (N,), event shape (T_max,)."""
        return TokenSequences(self, z)

    def decode_draw(self, qz_x: Any, z: torch.Tensor, y: torch.Tensor | None = None) -> TokenSequences:
        """p(x|z) for draws z (*S, B, L), sample-major (N = prod(S) B); ``decode`` itself (no work to reuse)."""
        return self.decode(z.flatten(0, -2) if z.dim() > 2 else z, y)  # flatten: L may be 0 (the language model)

    # -- the decoder's computations ------------------------------------------------------------------------------
    def sequence_log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z), teacher-forced, summed over each sentence's tokens and its ``<eos>``: (N,) nats.

        Without gradients the sequences run through the decoder :data:`ROW_CHUNK` at a time, and the vocabulary
        logits of :data:`TOKEN_CHUNK` tokens at a time, so memory stays bounded for any number of sequences."""
        if x.shape[0] != z.shape[0]:
            raise DataError(f"{x.shape[0]} sentences for {z.shape[0]} latents; give one latent per sentence")
        x, lengths = self._trim(x)
        if torch.is_grad_enabled():
            return self._log_prob_rows(z, x, lengths)
        parts = [self._log_prob_rows(z[i : i + ROW_CHUNK], x[i : i + ROW_CHUNK], lengths[i : i + ROW_CHUNK])
                 for i in range(0, len(x), ROW_CHUNK)]
        return torch.cat(parts) if parts else z.new_zeros(0)

    def _log_prob_rows(self, z: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([x.new_full((x.shape[0], 1), BOS), x[:, :-1]], dim=1)  # (N, T): <bos> w_1 .. w_{T-1}
        if self._regularising() and self.config.word_dropout > 0:
            drop = torch.rand(inputs.shape, device=x.device) < self.config.word_dropout
            drop[:, 0] = False  # <bos> stays
            inputs = torch.where(drop & (inputs != PAD), torch.full_like(inputs, UNK), inputs)
        h, _ = self._decoder_step(z, inputs, None)  # (N, T, H)
        mask = x != PAD  # (N, T)
        states, targets = h[mask], x[mask]  # (M, H), (M,): only real tokens reach the softmax
        if torch.is_grad_enabled():
            nll = self.decoder.token_nll(self.decoder.dropout(states) if self._regularising() else states, targets)
        else:
            nll = torch.cat([self.decoder.token_nll(states[i : i + TOKEN_CHUNK], targets[i : i + TOKEN_CHUNK])
                             for i in range(0, len(targets), TOKEN_CHUNK)]) if len(targets) else states.new_zeros(0)
        per_token = h.new_zeros(mask.shape)
        per_token[mask] = nll.to(h.dtype)
        return -per_token.sum(1)

    def _regularising(self) -> bool:
        """Whether the training-time noise (word dropout, dropout) applies: in training mode, computing a gradient.
        Everything else (validation, sampling, scores) sees the decoder as a function of z."""
        return self.training and torch.is_grad_enabled()

    def _decoder_step(
        self, z: torch.Tensor, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """LSTM outputs (N, T, H) for input tokens (N, T) given z (N, L), from ``state`` (default: z's)."""
        embedded = self.embedding(inputs)  # (N, T, E)
        if self._regularising():
            embedded = self.embedding_dropout(embedded)
        if z.shape[-1]:
            embedded = torch.cat([embedded, z.to(embedded.dtype)[:, None, :].expand(-1, inputs.shape[1], -1)], -1)
        if state is None:
            state = self.decoder.initial_state(z.to(embedded.dtype), self.decoder_hidden)
        out, state = self.decoder.lstm(embedded, state)
        return out, state

    @torch.no_grad()
    def step_decode(
        self, z: torch.Tensor, sample: bool, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Greedy (``sample=False``) or ancestral decoding of each latent: (N, T_max) ids, ``<pad>`` after
        ``<eos>``."""
        n, steps = z.shape[0], self.data_shape[0]
        out = torch.full((n, steps), PAD, dtype=torch.long, device=z.device)
        token = torch.full((n, 1), BOS, dtype=torch.long, device=z.device)
        finished = torch.zeros(n, dtype=torch.bool, device=z.device)
        state = None
        for t in range(steps):
            h, state = self._decoder_step(z, token, state)
            log_p = self.decoder.log_probs(h[:, 0])  # (N, V); <pad> and <bos> are never produced
            if t == steps - 1:
                token = torch.full((n, 1), EOS, dtype=torch.long, device=z.device)  # the longest sentence ends here
            elif sample:
                probs = torch.softmax(log_p / temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator)
            else:
                token = log_p.argmax(-1, keepdim=True)
            out[:, t] = torch.where(finished, PAD, token[:, 0])
            finished |= token[:, 0] == EOS
            if bool(finished.all()):
                break
        return out

    @torch.no_grad()
    def beam_search(self, z: torch.Tensor, beam_size: int) -> torch.Tensor:
        """Beam search of each latent's sequence: ``beam_size`` live hypotheses are extended a token at a time; one
        that ends (``<eos>``) leaves the beam, and the finished sequence of the highest mean log-probability per
        token is returned (the mean, not the sum, so that short sentences are not favoured). (N, T_max) ids."""
        n, steps, vocab = z.shape[0], self.data_shape[0], self.vocab_size
        zb = z.repeat_interleave(beam_size, 0)  # (N K, L)
        scores = torch.full((n, beam_size), -math.inf, device=z.device, dtype=torch.float64)
        scores[:, 0] = 0.0  # one live hypothesis to start from
        seqs = torch.full((n * beam_size, 0), PAD, dtype=torch.long, device=z.device)
        token = torch.full((n * beam_size, 1), BOS, dtype=torch.long, device=z.device)
        best = torch.full((n,), -math.inf, device=z.device, dtype=torch.float64)
        out = torch.full((n, steps), PAD, dtype=torch.long, device=z.device)
        rows, state = torch.arange(n, device=z.device), None
        for t in range(steps):
            h, state = self._decoder_step(zb, token, state)
            log_p = self.decoder.log_probs(h[:, 0]).double()  # (N K, V)
            total = (scores.reshape(-1, 1) + log_p).reshape(n, beam_size, vocab)
            ended, which = (total[:, :, EOS] / (t + 1)).max(1)  # the best hypothesis ending here, per latent
            better = ended > best
            if bool(better.any()):
                best = torch.where(better, ended, best)
                chosen = seqs.reshape(n, beam_size, t)[rows, which]  # (N, t)
                out[better] = PAD
                out[better, :t] = chosen[better]
                out[better, t] = EOS
            total[:, :, EOS] = -math.inf  # ended hypotheses leave the beam
            scores, index = total.reshape(n, beam_size * vocab).topk(beam_size, dim=1)  # (N, K)
            if t == steps - 1 or not bool(torch.isfinite(scores).any()):
                break
            parent = (index // vocab + rows[:, None] * beam_size).reshape(-1)
            token = (index % vocab).reshape(-1, 1)
            seqs = torch.cat([seqs[parent], token], dim=1)
            state = (state[0][:, parent], state[1][:, parent])
        return out

    @classmethod
    def contract_examples(cls) -> list[ContractExample]:
        """A small sentence VAE (full softmax, word dropout) and one with an adaptive softmax and BN-VAE, each on
        random sentences of 1 to 6 words from a 12-token vocabulary."""

        def sentences(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
            x = torch.full((n, 7), PAD, dtype=torch.long)
            lengths = torch.randint(1, 7, (n,), generator=generator)
            for i, length in enumerate(lengths.tolist()):
                x[i, :length] = torch.randint(EOS + 1, 12, (length,), generator=generator)
                x[i, length] = EOS
            return x, None

        small = {"family": "text", "latent_dim": 3, "hidden_dims": (16,), "embedding_dim": 8, "vocab_size": 12}
        return [
            ContractExample("lstm", ModelConfig(word_dropout=0.3, **small), (7,), sentences),  # type: ignore[arg-type]
            ContractExample("adaptive-bn", ModelConfig(softmax_cutoffs=(6,), posterior_batchnorm=0.6, dropout=0.2,
                                                       **small), (7,), sentences),  # type: ignore[arg-type]
        ]

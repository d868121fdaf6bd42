"""The text family (vaekit.models.text): the sequence likelihood is a normalised, teacher-forced sum over tokens with
one <eos>, the decodings do what they say, the language model (latent_dim=0) is exact, and the collapse remedies act."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vaekit.config import Config, ModelConfig, ObjectiveConfig, TrainConfig
from vaekit.data.text import BOS, EOS, FIRST_OUTPUT, PAD, UNK
from vaekit.errors import ConfigError, DataError
from vaekit.models import build_model
from vaekit.models.bounds import elbo, iwae_bound
from vaekit.models.text import SentenceVAE
from vaekit.training.schedules import kl_weight

WORDS = (4, 5)  # a vocabulary of <pad> <bos> <unk> <eos> and two words


def _model(latent: int = 2, length: int = 3, vocab: int = 6, seed: int = 0, **fields: object) -> SentenceVAE:
    torch.manual_seed(seed)
    settings: dict[str, object] = {"family": "text", "latent_dim": latent, "hidden_dims": (8,), "embedding_dim": 4,
                                   "vocab_size": vocab, **fields}
    model = build_model(ModelConfig(**settings), (length,))  # type: ignore[arg-type]
    assert isinstance(model, SentenceVAE)
    return model.double().eval()


def _sequences(length: int) -> torch.Tensor:
    """Every sentence of at most ``length`` tokens ending in <eos>, and every ``length``-token prefix without one."""
    outputs = (UNK, *WORDS)  # the tokens besides <eos>
    rows = []
    for n in range(length):  # n words, then <eos>
        for words in itertools.product(outputs, repeat=n):
            rows.append([*words, EOS, *[PAD] * (length - n - 1)])
    rows += [list(words) for words in itertools.product(outputs, repeat=length)]  # not ended within `length`
    return torch.tensor(rows)


@pytest.mark.parametrize("fields", [{}, {"softmax_cutoffs": (4,)}, {"latent": 0}])
def test_the_sequence_probabilities_sum_to_one(fields: dict[str, object]) -> None:
    """Over all sentences of up to T tokens and all T-token prefixes that have not ended, p(x|z) sums to 1: the
    decoder is a normalised distribution over <unk>, <eos> and the words (never <pad> or <bos>)."""
    model = _model(**fields)  # type: ignore[arg-type]
    x = _sequences(3)
    z = torch.randn(1, model.latent_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        log_p = model.decode(z.expand(len(x), -1)).log_prob(x)
    assert len(x) == 1 + 3 + 9 + 27 and math.isclose(float(log_p.exp().sum()), 1.0, rel_tol=1e-9)


def test_log_prob_is_the_teacher_forced_sum_over_the_words_and_the_eos() -> None:
    model = _model(length=6)
    x = torch.tensor([[4, 5, 5, EOS, PAD, PAD]])
    z = torch.randn(1, 2, dtype=torch.float64)
    with torch.no_grad():
        total, state, previous = 0.0, None, torch.tensor([[BOS]])
        for token in (4, 5, 5, EOS):  # one step at a time, through the generation path
            h, state = model._decoder_step(z, previous, state)
            total += float(model.decoder.log_probs(h[:, 0])[0, token])
            previous = torch.tensor([[token]])
        log_p = model.decode(z).log_prob(x)
        padded = model.decode(z).log_prob(torch.cat([x, torch.full((1, 0), PAD)], 1)[:, :4])  # padding cut off
    assert math.isclose(float(log_p), total, rel_tol=1e-9) and math.isclose(float(padded), total, rel_tol=1e-9)


def test_greedy_decoding_takes_the_most_probable_token_and_the_beam_finds_a_sequence_at_least_as_probable() -> None:
    model = _model(length=5, hidden_dims=(16,), seed=3)
    z = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        greedy = model.decode(z).mean
        for row in range(4):
            state, previous = None, torch.tensor([[BOS]])
            for t in range(5):
                h, state = model._decoder_step(z[row : row + 1], previous, state)
                token = int(model.decoder.log_probs(h[:, 0]).argmax()) if t < 4 else EOS
                assert int(greedy[row, t]) == token
                if token == EOS:
                    assert bool((greedy[row, t + 1 :] == PAD).all())
                    break
                previous = torch.tensor([[token]])
        beam = model.decode(z).generate("beam", beam_size=8)

        def mean_log_p(x: torch.Tensor) -> torch.Tensor:
            return model.decode(z).log_prob(x) / (x != PAD).sum(1)

        assert bool((mean_log_p(beam) >= mean_log_p(greedy) - 1e-9).all())


def test_ancestral_sampling_draws_tokens_with_their_probabilities() -> None:
    model = _model(length=2)
    z = torch.zeros(1, 2, dtype=torch.float64)
    with torch.no_grad():
        h, _ = model._decoder_step(z, torch.tensor([[BOS]]), None)
        probs = model.decoder.log_probs(h[:, 0])[0].exp()
        draws = model.decode(z.expand(20000, -1)).generate("sample", generator=torch.Generator().manual_seed(0))
    first = torch.bincount(draws[:, 0], minlength=6).double() / 20000
    assert float(first[[PAD, BOS]].sum()) == 0.0
    assert torch.allclose(first, probs, atol=0.015), (first, probs)
    cold = model.decode(z.expand(2000, -1)).generate("sample", temperature=0.01, generator=torch.Generator())
    assert float((cold[:, 0] == int(probs.argmax())).double().mean()) > 0.99  # a low temperature is nearly greedy


def test_the_language_model_bounds_equal_its_exact_likelihood() -> None:
    model = _model(latent=0, length=4)
    x = _sequences(4)[:20]
    with torch.no_grad():
        exact = model.decode(torch.zeros(len(x), 0, dtype=torch.float64)).log_prob(x)
        terms = elbo(model, x)
        assert torch.equal(terms.kl, torch.zeros(len(x), dtype=torch.float64))
        torch.testing.assert_close(terms.elbo, exact)
        for k in (1, 7):
            torch.testing.assert_close(iwae_bound(model, x, k, chunk_size=3), exact)
    assert not any("encoder" in name for name, _ in model.named_parameters())


def test_latent_dim_zero_is_refused_by_the_other_families() -> None:
    with pytest.raises(ConfigError, match="latent_dim=0"):
        build_model(ModelConfig(latent_dim=0), (6,))


def test_word_dropout_and_dropout_act_only_when_training_with_gradients() -> None:
    model = _model(length=6, word_dropout=0.5, dropout=0.3).train()
    x = torch.tensor([[4, 5, 4, 5, EOS, PAD]] * 8)
    z = torch.zeros(8, 2, dtype=torch.float64)
    torch.manual_seed(0)
    noisy = model.decode(z).log_prob(x)
    assert not torch.allclose(noisy, noisy[:1].expand(8))  # each row its own word dropout
    with torch.no_grad():
        quiet = model.decode(z).log_prob(x)
    torch.testing.assert_close(quiet, model.eval().decode(z).log_prob(x))


def test_bn_vae_fixes_the_spread_of_the_posterior_means_so_the_kl_stays_above_its_floor() -> None:
    """With BN-VAE (Zhu et al. 2020) the means of each latent dimension over a training batch have variance gamma^2
    (up to batch normalisation's eps, felt here as the untrained encoder's means hardly vary), so the batch's mean KL
    per dimension is at least about gamma^2 / 2 whatever the weights."""
    gamma = 0.6
    model = _model(length=8, latent=4, posterior_batchnorm=gamma).train()
    x = torch.randint(4, 6, (64, 8))
    x[:, -1] = EOS
    with torch.no_grad():
        mu = model.encode(x).mean
        kl = elbo(model, x).kl_per_dim.mean(0)
    torch.testing.assert_close(mu.var(0, unbiased=False), torch.full((4,), gamma**2, dtype=torch.float64),
                               atol=0.0, rtol=0.05)
    assert bool((kl >= 0.95 * gamma**2 / 2).all()), kl


def test_cyclical_kl_annealing_rises_over_each_cycle_and_ends_at_beta() -> None:
    config = Config(objective=ObjectiveConfig(beta=1.0, kl_cycles=4, kl_cycle_ratio=0.5), train=TrainConfig())
    weights = [kl_weight(step, 400, config) for step in range(401)]
    assert weights[0] == 0.0 and weights[25] == 0.5 and weights[50] == 1.0 and weights[99] == 1.0
    assert weights[100] == 0.0 and weights[125] == 0.5 and weights[400] == 1.0
    assert sum(w == 0.0 for w in weights) == 4
    with pytest.raises(ConfigError, match="two KL schedules"):
        ObjectiveConfig(kl_cycles=2, kl_warmup_steps=100)


def test_bad_inputs_are_refused_clearly() -> None:
    model = _model(length=4)
    for bad, message in ((torch.zeros(2, 5), "T <= 4"), (torch.full((2, 3), 0.5), "whole numbers"),
                         (torch.tensor([[9, EOS, PAD]]), "outside the vocabulary"), (torch.zeros(2, 2, 2), "(B, T)"),
                         (torch.tensor([[4, PAD, 5, EOS]]), "padding"), (torch.tensor([[PAD, PAD, PAD]]), "empty")):
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            model.check_input(bad)
    with pytest.raises(ConfigError, match="decoding"):
        model.decode(torch.zeros(1, 2)).generate("nucleus")
    full = _model(softmax_cutoffs=(9,))  # a cutoff outside the vocabulary is not used: a full softmax
    assert isinstance(full.decoder.output, torch.nn.Linear) and full.decoder.output.out_features == 6 - FIRST_OUTPUT

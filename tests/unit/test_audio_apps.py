"""The audio writer (WAV files, spectrogram pictures), the run-directory figures of audio models, the classifier of an
audio folder with a test split, and Python's verbs with writer options. Clips are synthesised here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.apps.audio import AudioWriter, clip_paths, sequence
from vaekit.apps.writers import Layout
from vaekit.config import DataConfig, ModelConfig
from vaekit.data import load_data
from vaekit.errors import ConfigError, DataError, OutputError
from vaekit.models import build_model

sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")
sys.path.insert(0, str(Path(__file__).parent))
from test_audio_data import TONES, write_tones  # noqa: E402  (the clips of the data tests)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    folder = write_tones(tmp_path_factory.mktemp("audio-apps") / "tones", takes=6)
    cfg = DataConfig(source=str(folder), sample_rate=8000, clip_seconds=0.25, n_fft=128, hop_length=32, n_mels=40,
                     labels_from="{label}_{speaker}_{take}", test_split="take=0-1", val_fraction=0.2)
    return load_data(cfg)


@pytest.fixture(scope="module")
def model(bundle):
    torch.manual_seed(0)
    config = ModelConfig(architecture="conv", likelihood="laplace", latent_dim=3, channels=(4, 8), hidden_dims=(16,),
                         num_classes=3)
    model = build_model(config, bundle.preprocessing.shape)
    model.preprocessing = bundle.preprocessing
    return model.eval()


def test_clip_names_follow_the_layout_and_its_captions(tmp_path: Path) -> None:
    out = tmp_path / "rec.wav"
    layout = Layout(ncol=1, row_labels=("originals", "reconstructed") * 2)
    assert [p.name for p in clip_paths(out, 4, layout)] == [
        "rec_00_originals.wav", "rec_01_reconstructed.wav", "rec_02_originals.wav", "rec_03_reconstructed.wav"]
    grid = Layout(ncol=3, col_labels=("class 0", "class 1", "class 2"))
    assert [p.name for p in clip_paths(tmp_path / "s.png", 4, grid)][2:] == ["s_02_class-2.wav", "s_03_class-0.wav"]
    many = clip_paths(out, 120, Layout(ncol=10))
    assert many[0].name == "rec_000.wav" and many[-1].name == "rec_119.wav"
    signed = clip_paths(out, 3, Layout(ncol=3, row_labels=("z[0]",), col_labels=("-3", "-0.75", "+3")))
    assert [p.name for p in signed] == ["rec_00_z-0_-3.wav", "rec_01_z-0_-0.75.wav", "rec_02_z-0_+3.wav"]


def test_sequence_puts_a_quarter_second_of_silence_between_clips() -> None:
    waves = np.ones((3, 100), np.float32)
    joined = sequence(waves, 8000)
    assert joined.shape == (300 + 2 * 2000,)
    assert joined[:100].all() and not joined[100:2100].any() and joined[2100:2200].all()


def test_writer_writes_the_decoded_clips(model, bundle, tmp_path: Path) -> None:
    record = bundle.preprocessing
    x = bundle.test.tensor()[:2].numpy()
    wav = AudioWriter().write(model, x, tmp_path / "two.png", Layout(ncol=2, extras={"griffin_lim_iters": 8}))
    assert wav == tmp_path / "two.wav"
    expected = record.to_waveforms(x, n_iter=8)
    for i in range(2):
        alone, rate = sf.read(tmp_path / f"two_{i:02d}.wav", dtype="float32")
        assert rate == 8000
        np.testing.assert_allclose(alone, np.clip(expected[i], -1, 1), atol=1 / 16384)  # 16-bit rounding
    assert sf.info(wav).frames == 2 * record.clip_samples + 2000
    from PIL import Image

    with Image.open(tmp_path / "two.png") as picture:
        assert picture.mode == "RGB" and picture.height >= 2 * record.n_mels and picture.width >= 4 * record.frames
    for extras, match in (({"griffin_lim_iters": 0}, "griffin_lim_iters must be a positive integer"),
                          ({"griffin_lim_iters": True}, "griffin_lim_iters must be a positive integer"),
                          ({"griffin_lim_iter": 5}, "unknown writer option 'griffin_lim_iter'")):
        with pytest.raises(ConfigError, match=match):
            AudioWriter().write(model, x, tmp_path / "bad.wav", Layout(ncol=2, extras=extras))
    (tmp_path / "bad_01.wav").mkdir()  # the second clip's file cannot be written: nothing is
    with pytest.raises(OutputError, match=r"bad_01\.wav': it is a directory"):
        AudioWriter().write(model, x, tmp_path / "bad.wav", Layout(ncol=2))
    assert sorted(p.name for p in tmp_path.glob("bad*")) == ["bad_01.wav"]
    upper = AudioWriter().write(model, x[:1], tmp_path / "one.WAV", Layout(ncol=1, extras={"griffin_lim_iters": 2}))
    assert upper == tmp_path / "one.WAV" and upper.is_file()  # written under the name given


def test_pictures_put_low_bands_at_the_bottom_and_keep_blank_cells(bundle) -> None:
    record = bundle.preprocessing
    x = bundle.test.tensor()[:1].numpy()  # class 0: a 500 Hz tone, in a low band
    pictures = record.pictures(np.concatenate([x, np.full_like(x, np.nan)]))
    assert pictures.shape == (2, 3, 2 * record.n_mels, 2 * record.frames)
    brightness = pictures[0].mean(axis=(0, 2))  # (rows,), row 0 the top
    assert brightness.argmax() > len(brightness) // 2  # the tone's band is drawn in the lower half
    assert np.isnan(pictures[1]).all() and np.isfinite(pictures[0]).all()


def test_verbs_write_audio_with_writer_options(model, bundle, tmp_path: Path) -> None:
    import vaekit

    x = vaekit.sample(model, 2, seed=3, label=1, out=tmp_path / "s.wav", writer_options={"griffin_lim_iters": 4})
    assert x.shape == (2, *bundle.preprocessing.shape)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "s.npy", "s.png", "s.wav", "s_00.wav", "s_01.wav", "s_labels.npy"]
    path = vaekit.interpolate(model, str(bundle.preprocessing.source), index_a=0, index_b=3, steps=3,
                              out=tmp_path / "path.wav", writer_options={"griffin_lim_iters": 4})
    assert path.shape == (3, *bundle.preprocessing.shape) and len(list(tmp_path.glob("path_*.wav"))) == 3


def test_clips_louder_than_full_scale_are_scaled_not_clipped() -> None:
    from vaekit.apps.audio import FULL_SCALE, within_full_scale

    waves = np.stack([np.sin(np.linspace(0, 20, 400)) * 2.9, np.sin(np.linspace(0, 20, 400)) * 0.3]).astype(np.float32)
    fitted, peaks = within_full_scale(waves)
    np.testing.assert_allclose(peaks, [2.9, 0.3], rtol=1e-3)
    assert np.abs(fitted[0]).max() == pytest.approx(FULL_SCALE)
    np.testing.assert_allclose(fitted[0], waves[0] * FULL_SCALE / np.abs(waves[0]).max(), rtol=1e-6)  # same shape
    np.testing.assert_array_equal(fitted[1], waves[1])  # a quiet clip keeps its level


def test_one_sample_is_one_wav(model, bundle, tmp_path: Path) -> None:
    """n=1 writes NAME.wav (the clip itself, no silence) and no numbered copy; it used to fail in zip()."""
    import vaekit

    x = vaekit.sample(model, 1, seed=3, label=2, out=tmp_path / "one.wav", writer_options={"griffin_lim_iters": 4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npy", "one.png", "one.wav", "one_labels.npy"]
    alone, _ = sf.read(tmp_path / "one.wav", dtype="float32")
    expected = bundle.preprocessing.to_waveforms(x, n_iter=4)[0]
    np.testing.assert_allclose(alone, np.clip(expected, -1, 1), atol=1 / 16384)


def test_models_without_audio_cannot_write_sound(tiny_model, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not trained on audio"):
        AudioWriter().write(tiny_model(), np.zeros((1, 1, 8, 8), np.float32), tmp_path / "x.wav", Layout(ncol=1))


def test_run_figures_draw_spectrograms(model, bundle, tmp_path: Path) -> None:
    from vaekit.training.figures import write_figures

    originals = bundle.val.tensor()[:4]
    labels = torch.as_tensor(bundle.val.labels[:4])
    write_figures(tmp_path, model, [{"epoch": 1, "train_loss": 1.0, "val_elbo": -1.0}], originals, labels, 4, 0)
    from PIL import Image

    for name in ("samples.png", "reconstructions.png"):
        with Image.open(tmp_path / name) as picture:
            assert picture.mode == "RGB"  # coloured spectrograms, not grey images of standardized values


def test_classifier_of_an_audio_folder_uses_its_split(bundle, tmp_path: Path) -> None:
    from vaekit.evaluation.classifier import ClassifierSettings, get_classifier

    record = bundle.preprocessing
    classifier = get_classifier(record.source, record, cache_dir=tmp_path, settings=ClassifierSettings(steps=40))
    assert classifier.info["train_examples"] == len(bundle.train) + len(bundle.val)
    assert classifier.info["test_examples"] == len(bundle.test) == 3 * 2 * 2
    assert classifier.test_accuracy > 0.9  # three tones are easy to tell apart
    assert len(TONES) == classifier.num_classes


def test_evaluate_reports_griffin_lim_spectral_convergence(model, bundle) -> None:
    from vaekit.evaluation import evaluate

    report = evaluate(model, k=2)
    assert report.num_examples == len(bundle.test) and report.extras["griffin_lim_clips"] == len(bundle.test)
    assert 0 < report.extras["griffin_lim_mel_sc"] < 0.3  # tones survive the round trip
    assert report.extras["reconstruction_mel_sc"] > report.extras["griffin_lim_mel_sc"]  # an untrained model
    table = report.format_table()
    assert "Griffin-Lim (mel SC)" in table and "reconstructed sound (mel SC)" in table
    assert report.to_dict()["extras"]["griffin_lim_iters"] == bundle.preprocessing.griffin_lim_iters

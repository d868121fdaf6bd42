"""Audio data (vaekit.data.audio, vaekit.data.audio_source): reading clips, labels, splits, log-mel features, the
preprocessing record, Griffin-Lim and the bad input. Every clip is synthesised here with soundfile."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.config import DataConfig
from vaekit.data import load_data, load_examples, preprocessing_from_dict
from vaekit.data.audio import AudioPreprocessing, fix_length, read_clip, spectral_convergence
from vaekit.data.audio_source import is_audio_path
from vaekit.errors import ConfigError, DataError
from vaekit.models.likelihoods import LIKELIHOODS

sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")

RATE = 8000
TONES = (500.0, 1200.0, 2500.0)  # class k is a tone at TONES[k] Hz


def tone(freq: float, seconds: float, rate: int = RATE, amplitude: float = 0.5, seed: int = 0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return (amplitude * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write_tones(
    folder: Path, speakers: tuple[str, ...] = ("ann", "bob"), takes: int = 4, seconds: float = 0.25
) -> Path:
    """``{class}_{speaker}_{take}.wav`` clips: class k is a tone at TONES[k] Hz, lengths vary around ``seconds``."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, freq in enumerate(TONES):
        for s, speaker in enumerate(speakers):
            for take in range(takes):
                length = seconds * (0.6 + 0.3 * ((take + s) % 3))
                sf.write(folder / f"{k}_{speaker}_{take}.wav", tone(freq, length, seed=take), RATE, subtype="PCM_16")
    return folder


def config(folder: Path, **fields: object) -> DataConfig:
    settings: dict[str, object] = {
        "source": str(folder), "sample_rate": RATE, "clip_seconds": 0.25, "n_fft": 128, "hop_length": 32,
        "n_mels": 16, "labels_from": "{label}_{speaker}_{take}", "val_fraction": 0.2, **fields,
    }
    return DataConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tones(tmp_path_factory.mktemp("audio") / "tones")


# -- reading clips ---------------------------------------------------------------------------------------------
def test_fix_length_crops_and_pads_at_the_chosen_end() -> None:
    y = np.arange(1, 8, dtype=np.float32)  # 7 samples
    assert fix_length(y, 3, "center").tolist() == [3, 4, 5]
    assert fix_length(y, 3, "start").tolist() == [1, 2, 3]
    assert fix_length(y, 10, "center").tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 0]
    assert fix_length(y, 10, "start").tolist() == [1, 2, 3, 4, 5, 6, 7, 0, 0, 0]
    assert fix_length(y, 7, "center").tolist() == y.tolist()


def test_stereo_is_mixed_down_and_other_rates_are_resampled(tmp_path: Path) -> None:
    left, right = tone(400, 0.5, 16000), tone(1000, 0.5, 16000, amplitude=0.2, seed=1)
    sf.write(tmp_path / "stereo.flac", np.stack([left, right], axis=1), 16000, subtype="PCM_24")
    samples, rate = read_clip(tmp_path / "stereo.flac")
    assert rate == 16000 and samples.shape == (8000,)
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-4)  # mean of the channels (24-bit rounding)

    resampled, rate = read_clip(tmp_path / "stereo.flac", 8000)
    assert rate == 8000 and resampled.shape == (4000,)
    spectrum = np.abs(np.fft.rfft(resampled))
    peaks = np.fft.rfftfreq(len(resampled), 1 / 8000)[np.argsort(spectrum)[-2:]]
    assert sorted(np.round(peaks / 100).astype(int).tolist()) == [4, 10]  # both tones survive at their pitch


def test_float_and_ogg_files_are_read(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", tone(440, 0.2), RATE, subtype="FLOAT")
    sf.write(tmp_path / "b.ogg", tone(440, 0.2), RATE, format="OGG", subtype="VORBIS")
    for name in ("a.wav", "b.ogg"):
        samples, rate = read_clip(tmp_path / name)
        assert rate == RATE and abs(len(samples) - 1600) < 200 and np.abs(samples).max() > 0.3


@pytest.mark.parametrize("content, fragment", [
    (b"this is not audio at all, just text with a .wav name", "cannot read audio file"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x55\x00\x01\x00\x40\x1f\x00\x00\x80\x3e\x00\x00\x02\x00"
     b"\x10\x00data\x00\x00\x00\x00", "cannot read audio file"),  # MP3 payload in a WAV (format tag 0x55)
])
def test_undecodable_files_are_one_line_errors_naming_the_file(tmp_path: Path, content: bytes, fragment: str) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=fragment) as info:
        read_clip(bad)
    assert "bad.wav" in str(info.value) and "\n" not in str(info.value)


def test_a_clip_of_length_zero_is_refused(tmp_path: Path) -> None:
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    with pytest.raises(DataError, match=r"holds no samples \(length 0\)"):
        read_clip(tmp_path / "empty.wav")


def test_a_truncated_header_is_refused(tmp_path: Path) -> None:
    sf.write(tmp_path / "ok.wav", tone(440, 0.1), RATE)
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:30])
    with pytest.raises(DataError, match=r"cut.wav"):
        read_clip(tmp_path / "cut.wav")


# -- the source: labels, splits, features -------------------------------------------------------------------
def test_pattern_labels_test_split_and_standardized_features(tones: Path) -> None:
    bundle = load_data(config(tones, test_split="take=0-1"))
    record = bundle.preprocessing
    assert isinstance(record, AudioPreprocessing) and record.modality == "audio"
    assert record.shape == (1, 16, 1 + 2000 // 32) and record.classes == ("0", "1", "2")
    assert bundle.test is not None and len(bundle.test) == 3 * 2 * 2  # takes 0 and 1 of 3 classes x 2 speakers
    assert len(bundle.train) + len(bundle.val) == 3 * 2 * 2
    assert sorted(np.bincount(bundle.test.labels).tolist()) == [4, 4, 4]
    x_train = bundle.train.tensor().double()
    assert abs(float(x_train.mean())) < 1e-4 and abs(float(x_train.std()) - 1) < 0.02  # fitted on train

    # The loudest mel band of each class sits at its tone's frequency.
    import librosa

    centres = librosa.mel_frequencies(n_mels=16 + 2, fmax=RATE / 2)[1:-1]
    x_test = bundle.test.tensor()[:, 0]  # (N, M, T)
    for label, freq in enumerate(TONES):
        loudest = int(x_test[torch.as_tensor(bundle.test.labels) == label].mean(dim=(0, 2)).argmax())
        assert abs(centres[loudest] - freq) < 0.25 * freq


def test_the_split_and_labels_are_read_again_for_the_model(tones: Path) -> None:
    bundle = load_data(config(tones, test_split="take=0-1"))
    record = bundle.preprocessing
    test = load_examples(str(tones), record, split="test")
    np.testing.assert_array_equal(test.labels, bundle.test.labels)
    np.testing.assert_allclose(test.tensor(), bundle.test.tensor(), atol=1e-5)
    train = load_examples(str(tones), record, split="train")
    assert len(train) == len(bundle.train) + len(bundle.val)


def test_record_round_trips_through_json_and_the_registry(tones: Path) -> None:
    record = load_data(config(tones, test_split="take=0")).preprocessing
    again = preprocessing_from_dict(record.to_dict())
    assert again == record and isinstance(again, AudioPreprocessing)
    corrupt = {**record.to_dict(), "n_mels": 20}
    with pytest.raises(DataError, match="does not match its STFT settings"):
        preprocessing_from_dict(corrupt)
    with pytest.raises(DataError, match="newer vaekit"):
        preprocessing_from_dict({**record.to_dict(), "wavelet": "haar"})


def test_other_files_are_skipped_with_a_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_tones(tmp_path / "mixed", takes=2)
    (folder / "README.txt").write_text("spoken digits")
    (folder / "metadata.py").write_text("speakers = {}")
    with caplog.at_level(logging.INFO, logger="vaekit"):
        bundle = load_data(config(folder))
    assert "skipped 2 files that are not audio" in caplog.text
    assert len(bundle.train) + len(bundle.val) == 12 and bundle.test is None


def test_a_corrupt_clip_in_the_folder_stops_loading_with_its_name(tmp_path: Path) -> None:
    folder = write_tones(tmp_path / "corrupt", takes=2)
    (folder / "2_bob_9.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(DataError, match=r"2_bob_9.wav"):
        load_data(config(folder))


def test_names_that_do_not_match_the_pattern_are_refused(tones: Path) -> None:
    with pytest.raises(DataError, match=r"24 of 24 file names do not match .*\{label\}-\{take\}"):
        load_data(config(tones, labels_from="{label}-{take}"))
    with pytest.raises(ConfigError, match="names no field"):
        load_data(config(tones, labels_from="digits"))


@pytest.mark.parametrize("rule, error, fragment", [
    ("take", ConfigError, "is not FIELD=VALUES"),
    ("colour=red", ConfigError, "the clips have the fields: label, speaker, take"),
    ("take=7-9", DataError, "selects no clip"),
    ("take=0-3", DataError, "selects every clip"),
])
def test_bad_test_rules(tones: Path, rule: str, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        load_data(config(tones, test_split=rule))


def test_speaker_labels_are_numbered_by_name(tones: Path) -> None:
    bundle = load_data(config(tones, labels_from="{digit}_{label}_{take}", test_split="take=3"))
    assert bundle.preprocessing.classes == ("ann", "bob")
    assert sorted(set(bundle.train.labels.tolist())) == [0, 1]


def test_csv_labels_and_split(tmp_path: Path) -> None:
    folder = write_tones(tmp_path / "csv", takes=2)
    rows = ["file,label,split"] + [
        f"{p.name},{'high' if p.name[0] == '2' else 'low'},{'test' if p.stem.endswith('_0') else 'train'}"
        for p in sorted(folder.glob("*.wav"))
    ]
    table = tmp_path / "labels.csv"
    table.write_text("\n".join(rows) + "\n")
    bundle = load_data(config(folder, labels_from=str(table)))
    assert bundle.preprocessing.classes == ("high", "low") and bundle.preprocessing.test_split == "split=test"
    assert bundle.test is not None and len(bundle.test) == 6
    assert bundle.test.labels.tolist().count(0) == 2  # class 2's two test clips are "high"
    assert len(load_examples(str(folder), bundle.preprocessing, split="test")) == 6  # the table's split again
    other = write_tones(tmp_path / "other", speakers=("cy",), takes=1)  # not in the table: read, unlabelled
    examples = load_examples(str(other), bundle.preprocessing)
    assert len(examples) == 3 and examples.labels is None
    table.write_text("file,label\nnot_there.wav,low\n")
    with pytest.raises(DataError, match=r"not_there.wav"):
        load_data(config(folder, labels_from=str(table)))


def test_subfolders_are_classes_without_a_pattern(tmp_path: Path) -> None:
    for name, freq in (("hum", 300.0), ("whistle", 3000.0)):
        (tmp_path / "sub" / name).mkdir(parents=True)
        for i in range(3):
            sf.write(tmp_path / "sub" / name / f"{i}.wav", tone(freq, 0.25, seed=i), RATE)
    bundle = load_data(config(tmp_path / "sub", labels_from=None))
    assert bundle.preprocessing.classes == ("hum", "whistle")


def test_which_paths_the_audio_source_takes(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.new("L", (4, 4)).save(folder / f"{i}.png")
    sf.write(folder / "stray.wav", tone(440, 0.1), RATE)
    assert not is_audio_path(str(folder))  # more images than clips: an image folder
    assert is_audio_path(str(folder / "stray.wav"))
    sf.write(folder / "b.wav", tone(440, 0.1), RATE)
    sf.write(folder / "c.wav", tone(440, 0.1), RATE)
    assert is_audio_path(str(folder))


def test_bad_stft_settings_and_binarize(tones: Path) -> None:
    with pytest.raises(ConfigError, match="exceeds the 65 frequency bins"):
        load_data(config(tones, n_mels=80))
    with pytest.raises(ConfigError, match="longer than a clip"):
        load_data(config(tones, n_fft=4096))
    with pytest.raises(DataError, match=r"data.binarize=none"):
        load_data(config(tones, binarize="dynamic"))
    with pytest.raises(ConfigError, match="clip_seconds"):
        config(tones, clip_seconds=0)


# -- back to sound ----------------------------------------------------------------------------------------------
def test_griffin_lim_round_trip_of_a_tone_converges(tones: Path) -> None:
    record = load_data(config(tones, test_split="take=0", n_mels=40)).preprocessing  # mel bands finer than bins
    clip = fix_length(tone(1200.0, 0.25), record.clip_samples)[None]  # (1, S)
    x = record.features(clip)
    waves = record.to_waveforms(x, n_iter=32)
    assert waves.shape == (1, record.clip_samples) and waves.dtype == np.float32
    sc = spectral_convergence(clip, waves, record.n_fft, record.hop_length)
    assert sc.shape == (1,) and sc[0] < 0.15
    np.testing.assert_allclose(spectral_convergence(clip, clip, record.n_fft, record.hop_length), [0.0], atol=1e-6)
    noise = np.random.default_rng(0).normal(0, 0.3, clip.shape).astype(np.float32)
    assert spectral_convergence(clip, noise, record.n_fft, record.hop_length)[0] > 0.9
    np.testing.assert_array_equal(waves, record.to_waveforms(x, n_iter=32))  # a fixed start: reproducible
    spectrum = np.abs(np.fft.rfft(waves[0]))
    assert abs(np.fft.rfftfreq(record.clip_samples, 1 / RATE)[spectrum.argmax()] - 1200.0) < 40


# -- the other kinds of data ------------------------------------------------------------------------------------
def test_audio_for_an_image_model_and_images_for_an_audio_model(tones: Path, tmp_path: Path) -> None:
    from vaekit.data import Preprocessing

    image_record = Preprocessing(shape=(1, 8, 8), kind="unit", scale=16.0, source="digits")
    with pytest.raises(DataError, match="holds audio, but the model was trained on unit data"):
        load_examples(str(tones), image_record)
    audio_record = load_data(config(tones)).preprocessing
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 16, 63), np.float32))  # the model's shape, but not audio
    with pytest.raises(DataError, match=r"is not an audio file .* audio models read clips"):
        load_examples(str(tmp_path / "x.npy"), audio_record)
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("L", (63, 16)).save(tmp_path / "images" / "a.png")
    with pytest.raises(DataError, match=r"no audio files .* audio models read clips"):
        load_examples(str(tmp_path / "images"), audio_record)


def test_laplace_likelihood_is_the_laplace_density() -> None:
    from vaekit.config import ModelConfig

    likelihood = LIKELIHOODS.get("laplace")((2, 3), ModelConfig(likelihood="laplace"))
    with torch.no_grad():
        likelihood.log_scale.copy_(torch.log(torch.tensor([[0.5, 1.0, 2.0], [1.0, 1.0, 0.25]])))
    loc = torch.randn(4, 1, 2, 3)
    x = torch.randn(4, 2, 3)
    scale = likelihood.log_scale.exp()
    expected = (-(x - loc[:, 0]).abs() / scale - torch.log(2 * scale)).flatten(1).sum(1)
    px_z = likelihood(loc)
    torch.testing.assert_close(px_z.log_prob(x), expected)
    torch.testing.assert_close(px_z.mean, loc[:, 0])


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_decoder_predicted_scales(name: str, tmp_path: Path) -> None:
    from vaekit.config import ModelConfig
    from vaekit.models import build_model
    from vaekit.models.serialization import load, save_model

    config = ModelConfig(architecture="conv", likelihood=name, likelihood_scale="decoder", latent_dim=2,
                         channels=(4,), hidden_dims=(8,))
    likelihood = LIKELIHOODS.get(name)((1, 4, 6), config)
    assert likelihood.param_channels == 2 and not list(likelihood.parameters())  # no per-feature scale
    params = torch.randn(3, 2, 1, 4, 6)
    x = torch.randn(3, 1, 4, 6)
    loc, scale = params[:, 0], params[:, 1].clamp(min=-7).exp()
    density = torch.distributions.Laplace(loc, scale) if name == "laplace" else torch.distributions.Normal(loc, scale)
    torch.testing.assert_close(likelihood(params).log_prob(x), density.log_prob(x).flatten(1).sum(1))

    torch.manual_seed(0)
    model = build_model(config, (1, 4, 6))
    x_hat = model.decode(torch.zeros(2, 2))
    assert x_hat.mean.shape == (2, 1, 4, 6) and x_hat.stddev.shape == (2, 1, 4, 6)
    assert not torch.allclose(x_hat.stddev[0], x_hat.stddev[0, 0, 0, 0])  # a scale per element
    model(x[:2]).elbo.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    save_model(model, tmp_path / "m")
    again = load(tmp_path / "m")
    torch.testing.assert_close(again.decode(torch.ones(1, 2)).stddev, model.decode(torch.ones(1, 2)).stddev)

    from vaekit.apps.scoring import SATURATED

    with pytest.raises(ConfigError, match="score without --relative"):
        SATURATED.get(name)(model, x[:1])


def test_decoder_scales_need_a_likelihood_with_a_scale() -> None:
    from vaekit.config import ModelConfig

    with pytest.raises(ConfigError, match="needs a likelihood with a scale"):
        LIKELIHOODS.get("bernoulli")((3,), ModelConfig(likelihood_scale="decoder"))
    with pytest.raises(ConfigError, match="gaussian_scale=null or likelihood_scale=feature"):
        LIKELIHOODS.get("gaussian")((3,), ModelConfig(likelihood="gaussian", likelihood_scale="decoder",
                                                     gaussian_scale=0.5))


def test_header_of_the_unsupported_format_sample_is_a_real_wav_header() -> None:
    # The parametrized MP3-in-WAV case above must be a well-formed RIFF header, else it tests nothing new.
    header = (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x55\x00\x01\x00\x40\x1f\x00\x00\x80\x3e\x00\x00"
              b"\x02\x00\x10\x00")
    tag, channels, rate = struct.unpack("<HHI", header[20:28])
    assert (tag, channels, rate) == (0x55, 1, 8000)

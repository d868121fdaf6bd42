"""Audio end to end, through the command line: train on a folder of synthesised tone clips, then sample (a
conditional model says the class asked for), reconstruct, interpolate and evaluate, and the bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vaekit.cli.main import main
from vaekit.models import load as vaekit_load

sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")

RATE = 8000
TONES = (400.0, 1000.0, 2200.0)  # class k is a tone at TONES[k] Hz
SETTINGS = [
    "data.sample_rate=8000", "data.clip_seconds=0.25", "data.n_fft=128", "data.hop_length=32", "data.n_mels=40",
    "data.labels_from={label}_{speaker}_{take}", "data.test_split=take=0",
    "model.architecture=conv", "model.channels=[8,16]", "model.hidden_dims=[32]", "model.latent_dim=4",
    "model.likelihood=laplace", "train.batch_size=4", "train.lr=3e-3", "train.num_images=4",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def write_clips(folder: Path, takes: int = 8) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, freq in enumerate(TONES):
        for speaker in ("ann", "bob"):
            for take in range(takes):
                seconds = rng.uniform(0.15, 0.3)
                t = np.arange(round(seconds * RATE)) / RATE
                wave = rng.uniform(0.3, 0.6) * np.sin(2 * np.pi * freq * (1 + rng.normal(0, 0.01)) * t)
                sf.write(folder / f"{k}_{speaker}_{take}.wav", wave.astype(np.float32), RATE)
    return folder


def dominant_frequency(path: Path) -> float:
    wave, rate = sf.read(path)
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


def heard_as(path: Path) -> int:
    """The class whose tone is nearest (in semitones) to the loudest frequency of a clip."""
    return int(np.argmin(np.abs(np.log2(dominant_frequency(path) / np.array(TONES)))))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clips(tmp_path_factory.mktemp("audio") / "clips")


@pytest.fixture(scope="module")
def conditional_run(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audio-runs") / "cvae"
    code = main(["train", "--data", str(clips), "--out", str(out), "--epochs", "20", "--quiet",
                 *SETTINGS, "model.num_classes=3"])
    assert code == 0
    return out


def test_sample_with_a_label_sounds_like_that_class(conditional_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for label in range(len(TONES)):
        out = tmp_path / f"class{label}.wav"
        code, printed, _ = run(capsys, "sample", str(conditional_run), "--label", str(label), "-n", "3",
                               "--out", str(out), "--griffin-lim-iters", "16", "--quiet")
        assert code == 0 and f"to {out}" in printed
        info = sf.info(out)
        assert info.samplerate == RATE and info.subtype == "PCM_16"
        assert info.frames == 3 * 2000 + 2 * round(0.25 * RATE)  # three clips, two gaps of silence
        clips_alone = sorted(tmp_path.glob(f"class{label}_*.wav"))
        assert [p.name for p in clips_alone] == [f"class{label}_00.wav", f"class{label}_01.wav", f"class{label}_02.wav"]
        assert (tmp_path / f"class{label}.png").stat().st_size > 1000 and (tmp_path / f"class{label}.npy").exists()
        assert [heard_as(path) for path in clips_alone] == [label] * 3, [dominant_frequency(p) for p in clips_alone]


def test_reconstruct_interpolate_traverse_and_evaluate(conditional_run: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "reconstruct", str(conditional_run), "-n", "2", "--out", str(tmp_path / "rec.png"),
                     "--quiet")
    assert code == 0
    names = sorted(p.name for p in tmp_path.glob("rec*"))
    assert names == ["rec.png", "rec.wav", "rec_00_originals.wav", "rec_01_reconstructed.wav",
                     "rec_02_originals.wav", "rec_03_reconstructed.wav"]
    # The test split holds take 0 of each class and speaker, in file order: the first clip is class 0's tone.
    assert heard_as(tmp_path / "rec_00_originals.wav") == heard_as(tmp_path / "rec_01_reconstructed.wav") == 0

    code, _, _ = run(capsys, "interpolate", str(conditional_run), "--a", "0", "--b", "2", "--steps", "4",
                     "--out", str(tmp_path / "path.wav"), "--quiet")
    assert code == 0 and len(list(tmp_path.glob("path_*.wav"))) == 4 and (tmp_path / "path.png").exists()

    code, out, _ = run(capsys, "evaluate", str(conditional_run), "--k", "10", "--quiet")
    assert code == 0 and "nats" in out and "bits/dim" in out


def test_an_unconditional_model_and_a_label(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", str(clips), "--out", str(out), "--epochs", "1", "--quiet", *SETTINGS]) == 0
    code, _, err = run(capsys, "sample", str(out), "--label", "1", "--out", str(tmp_path / "s.wav"))
    one_line_error(code, err, "not conditional")
    code, _, err = run(capsys, "sample", str(out), "--out", str(tmp_path / "s.mp3"))
    one_line_error(code, err, ".wav/.png")
    assert not list(tmp_path.glob("s*"))


def test_bad_audio_folders_are_one_line_errors_and_leave_no_run(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_clips(tmp_path / "bad", takes=2)
    (folder / "0_ann_9.wav").write_bytes(b"not a wav file at all")
    code, _, err = run(capsys, "train", "--data", str(folder), "--out", str(tmp_path / "run"), *SETTINGS)
    one_line_error(code, err, "cannot read audio file", "0_ann_9.wav")
    assert not (tmp_path / "run").exists()

    (folder / "0_ann_9.wav").unlink()
    sf.write(folder / "1_bob_9.wav", np.zeros(0, np.float32), RATE)
    code, _, err = run(capsys, "train", "--data", str(folder), "--out", str(tmp_path / "run"), *SETTINGS)
    one_line_error(code, err, "length 0", "1_bob_9.wav")
    assert not (tmp_path / "run").exists()


def test_a_stray_array_is_skipped_and_bernoulli_on_spectrograms_is_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_clips(tmp_path / "clips", takes=2)
    np.save(folder / "arr.npy", np.zeros(3))  # one array among 12 clips: still a folder of clips, the array skipped
    out = tmp_path / "run"
    assert main(["train", "--data", str(folder), "--out", str(out), "--epochs", "1", "--quiet", *SETTINGS]) == 0
    assert vaekit_load(out).preprocessing.kind == "audio"
    code, _, err = run(capsys, "train", "--data", str(folder), "--out", str(tmp_path / "bernoulli"), "--epochs", "1")
    one_line_error(code, err, "Bernoulli likelihood needs data in [0, 1]", "log-mel spectrograms", "--preset fsdd")
    assert not (tmp_path / "bernoulli").exists()


def test_audio_model_with_image_data_and_image_model_with_audio(clips: Path, conditional_run: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("L", (8, 8), color=i * 50).save(images / f"{i}.png")
    code, _, err = run(capsys, "evaluate", str(conditional_run), "--data", str(images), "--k", "2")
    one_line_error(code, err, "no audio files", "audio models read clips")

    image_run = tmp_path / "digits"
    assert main(["train", "--out", str(image_run), "--epochs", "1", "--quiet", "model.hidden_dims=[16]",
                 "model.latent_dim=2"]) == 0
    code, _, err = run(capsys, "evaluate", str(image_run), "--data", str(clips), "--k", "2")
    one_line_error(code, err, "holds audio, but the model was trained on unit data")
    code, _, err = run(capsys, "sample", str(image_run), "--out", str(tmp_path / "x.wav"))
    one_line_error(code, err, ".png")

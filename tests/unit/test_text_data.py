"""Text data (vaekit.data.text): files the tests write themselves, read into token ids, split, bucketed, saved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.config import DataConfig
from vaekit.data import load_data, load_examples, preprocessing_from_dict
from vaekit.data.preprocessing import Preprocessing
from vaekit.data.text import EOS, PAD, SPECIAL_TOKENS, UNK, TextExamples, TextPreprocessing, read_lines
from vaekit.errors import DataError

TRAIN = ["the cat sat", "the dog sat on the mat", "a cat <unk> ran", "the end"]


def _folder(tmp_path: Path, names: tuple[str, str, str] = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / names[0]).write_text("".join(f" {line} \n" for line in TRAIN))
    (folder / names[1]).write_text("the cat ran\n")
    (folder / names[2]).write_text("the bird sat\n\nthe cat\n")
    return folder


def test_a_folder_of_ptb_files_gives_the_three_splits_with_a_vocabulary_of_the_training_split(tmp_path: Path) -> None:
    bundle = load_data(DataConfig(source=str(_folder(tmp_path)), max_length=10))
    record = bundle.preprocessing
    assert isinstance(record, TextPreprocessing) and record.vocabulary[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    words = record.vocabulary[len(SPECIAL_TOKENS):]
    assert words[0] == "the" and set(words) == {"the", "cat", "sat", "dog", "on", "mat", "a", "ran", "end"}
    assert "bird" not in words  # the test split does not reach the vocabulary
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (4, 1, 2)
    # tokens: words + one <eos> per sentence; the word "<unk>" is the unknown token itself, not an OOV word
    assert bundle.train.stats.tokens == 3 + 6 + 4 + 2 + 4 and bundle.train.stats.oov == 0
    x = bundle.train.batch(np.array([2]))
    assert x.dtype == torch.int64 and x.shape == (1, 11)
    assert record.decode(x) == ["a cat <unk> ran"] and int(x[0, 2]) == UNK and int(x[0, 4]) == EOS
    assert bundle.test.stats.oov == 1 and bundle.test.stats.empty_lines == 1  # "bird", and the blank line


@pytest.mark.parametrize("names", [("train.txt", "valid.txt", "test.txt"), ("x.train.txt", "x.val.txt", "x.test.txt")])
def test_other_split_names_are_recognised(tmp_path: Path, names: tuple[str, str, str]) -> None:
    bundle = load_data(DataConfig(source=str(_folder(tmp_path, names))))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (4, 1, 2)


def test_one_file_is_split_into_train_and_validation_by_a_seeded_draw(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(f"sentence number {i}" for i in range(40)) + "\n")
    a = load_data(DataConfig(source=str(path), val_fraction=0.25, seed=3))
    b = load_data(DataConfig(source=str(path), val_fraction=0.25, seed=3))
    assert (len(a.train), len(a.val), a.test) == (30, 10, None)
    assert a.preprocessing.decode(a.val.tensor()) == b.preprocessing.decode(b.val.tensor())
    held_out = set(a.preprocessing.decode(a.val.tensor()))
    assert not held_out & set(a.preprocessing.decode(a.train.tensor()))


def test_the_vocabulary_keeps_the_most_frequent_words_and_counts_the_rest_as_oov(tmp_path: Path) -> None:
    bundle = load_data(DataConfig(source=str(_folder(tmp_path)), vocab_size=2))
    assert bundle.preprocessing.vocabulary[len(SPECIAL_TOKENS):] == ("the", "cat")
    # every word but "the" and "cat" (sat, dog, sat, on, mat, a, ran, end); the word "<unk>" itself not counted
    assert bundle.train.stats.oov == 8


def test_long_lines_are_truncated_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "train.txt").write_text("one two three four five six\nshort one\none two three four five\n")
    (folder / "valid.txt").write_text("short one\n")
    examples = load_data(DataConfig(source=str(folder), max_length=4)).train
    assert isinstance(examples, TextExamples) and examples.stats.truncated == 2
    assert examples.lengths.tolist() == [5, 3, 5]  # at most 4 words, and the <eos>
    assert examples.preprocessing.decode(examples.tensor())[0] == "one two three four"
    assert "truncated 2 of 3 lines" in caplog.text


def test_empty_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "gaps.txt"
    path.write_text("a b\n\n   \nc d\n\n")
    lines, empty = read_lines(path)
    assert lines == ["a b", "c d"] and empty == 3


@pytest.mark.parametrize(("content", "message"), [
    (b"", "holds no sentences"),
    (b"\n \n", "holds no sentences (2 empty lines)"),
    (b"fine line\nbad \xff byte\n", "line 2 of"),
])
def test_bad_files_are_refused_with_the_line_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_data(DataConfig(source=str(path)))
    assert "\n" not in str(info.value)
    if b"\xff" in content:
        assert "not UTF-8 (byte 0xff at byte 5" in str(info.value)


def test_a_missing_text_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_data(DataConfig(source=str(tmp_path / "nope.txt")))


def test_bucketed_batches_cover_the_order_once_sorted_by_length_within_pools() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=500)
    raw = np.zeros((500, 31), dtype=np.int32)
    for i, n in enumerate(lengths):
        raw[i, :n] = 5
        raw[i, n] = EOS
    record = TextPreprocessing((30 + 1,), "whitespace", (*SPECIAL_TOKENS, "w", "v"), None, 30)
    examples = TextExamples(raw, record, stats=None)  # type: ignore[arg-type]
    order = torch.randperm(500, generator=torch.Generator().manual_seed(1))
    batches = examples.batch_order(order, 8, torch.Generator().manual_seed(2))
    again = examples.batch_order(order, 8, torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))  # a function of the generator
    assert len(batches) == -(-500 // 8)  # as many batches as without bucketing
    assert sorted(torch.cat(batches).tolist()) == list(range(500))
    padding = sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in (t.numpy() for t in batches))
    unbucketed = sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum())
                     for b in (t.numpy() for t in order.split(8)))
    assert padding < unbucketed / 5
    in_order = examples.batch_order(order, 8, None)
    assert torch.equal(torch.cat(in_order[:50]), torch.cat(batches[:0] + in_order[:50]))  # no generator: kept in order


def test_the_record_saves_as_json_and_loads_through_the_registry_of_kinds(tmp_path: Path) -> None:
    record = load_data(DataConfig(source=str(_folder(tmp_path)))).preprocessing
    import json

    back = preprocessing_from_dict(json.loads(json.dumps(record.to_dict())))
    assert isinstance(back, TextPreprocessing) and back == record
    old = preprocessing_from_dict(Preprocessing(shape=(4,), kind="unit").to_dict())
    assert isinstance(old, Preprocessing)  # array records load as before
    with pytest.raises(DataError, match="corrupted"):
        TextPreprocessing.from_dict({**record.to_dict(), "vocabulary": ["a", "b", "c", "d"]})


def test_subword_tokenizer_is_trained_on_train_and_round_trips(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    folder = tmp_path / "raw"
    folder.mkdir()
    text = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs!",
            "How vexingly quick daft zebras jump."] * 20
    (folder / "train.txt").write_text("\n".join(text) + "\n")
    (folder / "test.txt").write_text("The lazy zebra jumps.\n")
    bundle = load_data(DataConfig(source=str(folder), tokenizer="bpe", vocab_size=60, val_fraction=0.1))
    record = bundle.preprocessing
    assert record.tokenizer == "bpe" and record.vocab_size == 60 + len(SPECIAL_TOKENS)
    assert record.tokenizer_model is not None and record.vocabulary[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    ids = bundle.test.tensor()
    assert int((ids != PAD).sum()) > 5  # subword pieces, not whole words
    assert record.decode(ids) == ["The lazy zebra jumps."]
    back = preprocessing_from_dict(record.to_dict())
    assert back.decode(ids) == ["The lazy zebra jumps."]


def test_an_image_model_refuses_a_text_file_and_a_text_model_an_array(tmp_path: Path) -> None:
    image_record = Preprocessing(shape=(1, 8, 8), kind="unit", source="digits")
    with pytest.raises(DataError, match="is text, but the model was trained on unit data"):
        load_examples(str(_folder(tmp_path)), image_record)
    text_record = load_data(DataConfig(source=str(tmp_path / "corpus"))).preprocessing
    array = tmp_path / "x.npy"
    np.save(array, np.zeros((3, 11), dtype=np.float32))
    for source in (str(array), "digits"):
        with pytest.raises(DataError, match=r"is not text .* trained on text data"):
            load_examples(source, text_record)


def test_the_training_counts_give_a_normalised_unigram_model(tmp_path: Path) -> None:
    record = load_data(DataConfig(source=str(_folder(tmp_path)))).preprocessing
    assert record.counts is not None and record.counts[EOS] == len(TRAIN)
    assert record.counts[record.vocabulary.index("the")] == 4
    assert record.counts[PAD] == 0 and sum(record.counts) == 19  # 15 words and 4 <eos>
    outputs = torch.arange(2, record.vocab_size)  # every token a model predicts, as a one-token "sentence"
    one = torch.stack([outputs, torch.full_like(outputs, PAD)], 1)
    assert torch.isclose(record.unigram_log_prob(one).exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    shuffled = record.unigram_log_prob(torch.tensor([[5, 6, 7, EOS], [7, 5, 6, EOS]]))
    assert shuffled[0] == shuffled[1]  # a bag of words: order does not matter

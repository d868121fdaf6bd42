"""Interaction data (vaekit.data.interactions), the ranking metrics of the strong-generalization protocol
(vaekit.data.ranking), the multinomial likelihood and the encoder's input transform (Mult-VAE's parts).

Every file is written by the test itself: small clustered interaction sets in the formats the source reads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse

from vaekit.config import DataConfig, ModelConfig
from vaekit.data import SOURCES, load_data
from vaekit.data.interactions import (
    InteractionExamples,
    InteractionRecord,
    fold_in_split,
    known_items,
    own_split,
    read_item_names,
)
from vaekit.data.preprocessing import preprocessing_from_dict
from vaekit.data.ranking import mean_metrics, user_metrics
from vaekit.errors import DataError
from vaekit.models import build_model
from vaekit.models.likelihoods import MultinomialCounts
from vaekit.nn.inputs import InputTransform


def clustered_rows(n_users: int = 90, n_items: int = 40, groups: int = 3, seed: int = 0) -> list[tuple[str, str, int]]:
    """(user, item, rating) rows: each user likes (rates 4-5) 6+ items of its group's block, dislikes (1-2) 3 others."""
    rng = np.random.default_rng(seed)
    per = n_items // groups
    rows = []
    for u in range(n_users):
        block = np.arange((u % groups) * per, (u % groups + 1) * per)
        for i in rng.choice(block, size=int(rng.integers(6, per + 1)), replace=False):
            rows.append((str(u + 1), str(i + 1), int(rng.integers(4, 6))))
        for i in rng.choice(n_items, size=3, replace=False):
            rows.append((str(u + 1), str(i + 1), int(rng.integers(1, 3))))
    return rows


def write_udata(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    """GroupLens u.data: user, item, rating, timestamp separated by tabs, no header."""
    path.write_text("".join(f"{u}\t{i}\t{r}\t{881250949 + n}\n" for n, (u, i, r) in enumerate(rows)))
    return path


def _positives(bundle) -> int:
    """Positives of every split: the training users', and the held-out users' folded-in and held-out ones."""
    return bundle.train.raw.nnz + sum(s.raw.nnz + s.targets.nnz for s in (bundle.val, bundle.test))


def _config(path: Path, **fields: object) -> DataConfig:
    return DataConfig(**{"source": str(path), "heldout_users": 10, **fields})  # type: ignore[arg-type]


# -- ranking metrics ----------------------------------------------------------------------------------------------
def _direct(scores: np.ndarray, heldout: np.ndarray, exclude: np.ndarray, k: int) -> tuple[float, float]:
    """Recall@k and NDCG@k of one user, counted one rank at a time."""
    order = [i for i in np.argsort(-scores, kind="stable") if not exclude[i]][:k]
    relevant = set(np.flatnonzero(heldout))
    hits = [1.0 if i in relevant else 0.0 for i in order]
    dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
    idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(relevant))))
    return sum(hits) / min(k, len(relevant)), dcg / idcg


def test_ranking_metrics_match_a_direct_count() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(25, 130))  # no ties
    exclude = rng.random((25, 130)) < 0.2
    heldout = (rng.random((25, 130)) < 0.15) & ~exclude
    heldout[0] = False  # a user with nothing held out: no metric
    metrics = user_metrics(scores, heldout, exclude)
    assert math.isnan(float(metrics["recall@20"][0])) and math.isnan(float(metrics["ndcg@100"][0]))
    for u in range(1, 25):
        for k, name in ((20, "recall@20"), (50, "recall@50")):
            assert float(metrics[name][u]) == pytest.approx(_direct(scores[u], heldout[u], exclude[u], k)[0])
        assert float(metrics["ndcg@100"][u]) == pytest.approx(_direct(scores[u], heldout[u], exclude[u], 100)[1])
    means = mean_metrics([metrics])
    assert means["users"] == 24
    assert means["ndcg@100"] == pytest.approx(float(np.nanmean(metrics["ndcg@100"].numpy())))


def test_recall_is_normalised_by_the_held_out_count_and_excluded_items_are_never_ranked() -> None:
    scores = torch.tensor([[9.0, 8.0, 1.0, 7.0, 0.5]])
    heldout = torch.tensor([[0, 0, 0, 1, 0]])
    exclude = torch.tensor([[True, True, False, False, False]])  # the two best are folded in
    metrics = user_metrics(scores, heldout, exclude, recall_ks=(1, 20), ndcg_ks=(3,))
    assert float(metrics["recall@1"][0]) == 1.0  # the held-out item is first once the folded-in ones are out
    assert float(metrics["recall@20"][0]) == 1.0  # divided by min(20, 1), not by 20
    assert float(metrics["ndcg@3"][0]) == pytest.approx(1.0)
    worse = user_metrics(torch.tensor([[9.0, 8.0, 7.5, 7.0, 0.5]]), heldout, exclude, recall_ks=(1,), ndcg_ks=(3,))
    assert float(worse["recall@1"][0]) == 0.0 and float(worse["ndcg@3"][0]) == pytest.approx(1 / math.log2(3))


# -- reading files ------------------------------------------------------------------------------------------------
def test_grouplens_udata_is_read_with_the_rating_threshold(tmp_path: Path) -> None:
    rows = clustered_rows()
    path = write_udata(tmp_path / "u.data", rows)
    assert SOURCES.get("interactions").matches(str(path))
    bundle = load_data(_config(path))
    record = bundle.preprocessing
    assert isinstance(record, InteractionRecord) and record.kind == "interactions"
    users = len(bundle.train) + len(bundle.val) + len(bundle.test)
    assert users == 90 and len(bundle.val) == len(bundle.test) == 10
    positives = {(u, i) for u, i, r in rows if r >= 4}
    train_users = set(bundle.train.ids)
    expected = {(u, i) for u, i in positives if u in train_users}
    got = {(bundle.train.ids[r], record.items[c]) for r, c in zip(*bundle.train.raw.nonzero(), strict=True)}
    assert got == expected  # exactly the training users' positives: no rating below 4, nothing invented
    assert list(record.items) == sorted(record.items, key=int)  # numeric ids in numeric order ("2" before "10")


def test_csv_with_a_header_string_ids_and_duplicates(tmp_path: Path) -> None:
    lines = ["userId,movieId,rating,timestamp"]
    for u in range(30):
        for i in range(8):
            lines.append(f"user-{u},m{(u % 3) * 8 + i},5,0")
        lines.append(f"user-{u},m{(u % 3) * 8},5,0")  # a duplicate (user, item): collapsed into one positive
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    assert SOURCES.get("interactions").matches(str(path))
    bundle = load_data(_config(path, heldout_users=3))
    assert bundle.preprocessing.items[0].startswith("m")
    assert bundle.train.raw.data.tolist() == [1.0] * bundle.train.raw.nnz  # 0/1: the duplicate counted once
    assert np.diff(bundle.train.raw.indptr).tolist() == [8] * len(bundle.train)
    assert all(user.startswith("user-") for user in bundle.train.ids)


def test_a_byte_order_mark_spaces_in_the_header_and_unusual_digits(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts with a byte-order mark; "user, item" headers have spaces; "²" is a digit to
    # str.isdigit but not a number: all read as plain ids and names
    lines = ["user_id, item_id, rating, timestamp"]
    lines += [f"u{u}, {'²' if (u, i) == (0, 0) else i + (u % 3) * 8}, 5, 0" for u in range(30) for i in range(8)]
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())
    assert SOURCES.get("interactions").matches(str(path))
    for config in (_config(path, heldout_users=3), _config(path, heldout_users=3, user_column="user_id")):
        bundle = load_data(config)
        assert bundle.preprocessing.user_column == "user_id" and "²" in bundle.preprocessing.items


def test_other_column_names_need_the_format_and_parquet_without_ratings(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    from pyarrow import parquet

    rows = [r for r in clustered_rows(60) if r[2] >= 4]
    table = pa.table({"customer": [u for u, _, _ in rows], "sku": [int(i) for _, i, _ in rows]})
    path = tmp_path / "orders.parquet"
    parquet.write_table(table, path)
    assert not SOURCES.get("interactions").matches(str(path))  # no user/item names: not recognised by itself
    bundle = load_data(_config(path, format="interactions", user_column="customer", item_column="sku"))
    assert bundle.preprocessing.rating_column is None and bundle.preprocessing.min_rating is None
    items = set(bundle.preprocessing.items)
    assert _positives(bundle) == len({(u, i) for u, i, _ in rows if i in items})  # every row a positive
    with pytest.raises(DataError, match="no user column 'client'"):
        load_data(_config(path, format="interactions", user_column="client", item_column="sku"))


def test_min_rating_null_counts_every_row(tmp_path: Path) -> None:
    rows = clustered_rows()
    path = write_udata(tmp_path / "u.data", rows)
    bundle = load_data(_config(path, min_rating=None))
    items = set(bundle.preprocessing.items)
    assert _positives(bundle) == len({(u, i) for u, i, _ in rows if i in items})  # low ratings count too


@pytest.mark.parametrize(("content", "message"), [
    ("", "is empty"),
    ("user,item,rating\n", "holds no interactions"),
    ("1\t2\tnan\t0\n1\t3\t5\t0\n", "missing or NaN"),
    ("1\t2\t-1\t0\n1\t3\t5\t0\n", "negative"),
    ("1\t2\tfive\t0\n", "cannot read interactions"),
    ("a,b,c\n1,2,3\n", r"cannot tell which columns .* \(columns: a, b, c\); name them with data.user_column"),
    ("1,2,3\nx,2,five\n", "invalid value 'five'.*read without a header row"),
    ("user,thing\n1,2\n", "cannot tell which columns"),
    ("user,item\n,2\n", "have no user id"),
    ("user,item,rating\n1,2,2\n", "no user of .* has 5 or more positives"),
])
def test_bad_files_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_data(_config(path, format="interactions"))
    assert "\n" not in str(info.value)


def test_too_few_users_for_the_splits(tmp_path: Path) -> None:
    path = write_udata(tmp_path / "u.data", clustered_rows(12))
    with pytest.raises(DataError, match="cannot give 10 validation and 10 test users"):
        load_data(_config(path))


# -- the protocol -------------------------------------------------------------------------------------------------
def test_held_out_users_are_never_trained_on_and_20_percent_of_their_items_are_held_out(tmp_path: Path) -> None:
    bundle = load_data(_config(write_udata(tmp_path / "u.data", clustered_rows()), seed=3))
    train, val, test = bundle.train, bundle.val, bundle.test
    assert isinstance(val, InteractionExamples) and isinstance(test, InteractionExamples)
    assert not set(train.ids) & set(val.ids) and not set(train.ids) & set(test.ids) and not set(val.ids) & set(test.ids)
    assert set(val.ids) == set(bundle.preprocessing.val_users) and set(test.ids) == set(bundle.preprocessing.test_users)
    assert (np.asarray(train.raw.sum(axis=0)).ravel() > 0).all()  # the item map: items of the training users
    for split in (val, test):
        inputs, targets = split.raw, split.targets
        assert inputs.multiply(targets).nnz == 0  # disjoint
        n = np.diff(inputs.indptr) + np.diff(targets.indptr)
        assert np.diff(targets.indptr).tolist() == np.floor(0.2 * n).astype(int).tolist()
    other = load_data(_config(tmp_path / "u.data", seed=4))
    assert set(other.test.ids) != set(test.ids)  # another seed, another split
    again = load_data(_config(tmp_path / "u.data", seed=3))
    assert again.test.ids == test.ids and (again.test.targets != test.targets).nnz == 0  # the same seed, the same


def test_fold_in_split_depends_on_the_user_and_item_only() -> None:
    matrix = sparse.random(30, 50, density=0.3, format="csr", random_state=0, dtype=np.float32)
    matrix.data[:] = 1
    fold_in, heldout = fold_in_split(matrix, seed=1, stream=2)
    assert (fold_in + heldout != matrix).nnz == 0
    part_in, part_out = fold_in_split(matrix[:10], seed=1, stream=2)  # fewer rows read: the same split
    assert (part_out != heldout[:10]).nnz == 0 and (part_in != fold_in[:10]).nnz == 0


def test_the_record_round_trips_and_rebuilds_the_test_split(tmp_path: Path) -> None:
    path = write_udata(tmp_path / "u.data", clustered_rows())
    bundle = load_data(_config(path))
    record = bundle.preprocessing
    restored = preprocessing_from_dict(record.to_dict())  # the registry of preprocessing kinds
    assert restored == record and isinstance(restored, InteractionRecord)
    rebuilt = own_split(path, restored, "test")
    assert rebuilt.ids == bundle.test.ids
    assert (rebuilt.raw != bundle.test.raw).nnz == 0 and (rebuilt.targets != bundle.test.targets).nnz == 0
    with pytest.raises(DataError, match="newer vaekit"):
        InteractionRecord.from_dict({**record.to_dict(), "bucket": 1})


def test_known_items_and_item_names(tmp_path: Path) -> None:
    record = InteractionRecord(items=("1", "2", "10"))
    assert known_items(record, ["10", 1, "x", "10", " 2 "]) == (["1", "2", "10"], ["x"])
    with pytest.raises(DataError, match="none of the 2 item ids"):
        known_items(record, ["x", "y"])
    with pytest.raises(DataError, match="no items given"):
        known_items(record, [])
    names = tmp_path / "items.tsv"
    names.write_text("item_id:token\tmovie_title:token_seq\tyear\n1\tToy Story\t1995\n10\tHeat, Part 1\t1995\n")
    assert read_item_names(names) == {"1": "Toy Story", "10": "Heat, Part 1"}


def test_the_training_feed_never_densifies_a_whole_split(tmp_path: Path, tiny_config) -> None:
    from vaekit.training.distributed import Context
    from vaekit.training.feed import Feed

    bundle = load_data(_config(write_udata(tmp_path / "u.data", clustered_rows())))
    config = tiny_config()
    ctx = Context()
    for examples, validation in ((bundle.train, False), (bundle.val, True)):
        feed = Feed(config, ctx, examples, False, 16, validation=validation)
        assert feed.x is None
        seen = torch.cat([x for x, _ in feed.batches(0, torch.Generator().manual_seed(0))])
        assert seen.shape == (len(examples), len(bundle.preprocessing.items))
        assert sorted(seen.sum(1).tolist()) == sorted(np.diff(examples.raw.indptr).astype(float).tolist())


# -- the model's parts --------------------------------------------------------------------------------------------
def test_the_multinomial_log_prob_is_the_multinomial_pmf_given_the_count() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 7, dtype=torch.float64)
    x = torch.randint(0, 3, (4, 7)).double()
    ours = MultinomialCounts(logits).log_prob(x)
    for b in range(4):
        reference = torch.distributions.Multinomial(int(x[b].sum()), logits=logits[b]).log_prob(x[b])
        assert float(ours[b]) == pytest.approx(float(reference))
    assert torch.allclose(MultinomialCounts(logits).mean.sum(1), torch.ones(4, dtype=torch.float64))
    one_hot = MultinomialCounts(logits).sample()
    assert one_hot.sum(1).tolist() == [1.0] * 4


def test_the_multinomial_likelihood_takes_counts_only() -> None:
    model = build_model(ModelConfig(likelihood="multinomial", latent_dim=2, hidden_dims=(8,)), (5,))
    model.check_input(torch.tensor([[0.0, 1.0, 2.0, 0.0, 1.0]]))
    for bad in (-1.0, 0.5):
        with pytest.raises(DataError, match="counts"):
            model.check_input(torch.tensor([[0.0, 1.0, bad, 0.0, 1.0]]))


def test_input_transform_normalises_and_drops_only_in_training() -> None:
    transform = InputTransform("l2", dropout=0.5)
    x = torch.bernoulli(torch.full((200, 50), 0.4))
    x[0] = 0  # a user with nothing stays zero
    transform.eval()
    out = transform(x)
    assert torch.allclose(out[1:].norm(dim=1), torch.ones(199)) and bool((out[0] == 0).all())
    transform.train()
    dropped = transform(x)
    kept = (dropped > 0).sum() / (x > 0).sum()
    assert 0.45 < float(kept) < 0.55  # about half dropped, the rest scaled by 2
    assert torch.allclose(dropped[dropped > 0], 2 * out[dropped > 0])


def test_mult_vae_settings_add_no_weights() -> None:
    """Models written before the input transform existed load unchanged: it has no state."""
    plain = build_model(ModelConfig(latent_dim=2, hidden_dims=(8,)), (6,))
    mult = build_model(ModelConfig(latent_dim=2, hidden_dims=(8,), input_norm="l2", input_dropout=0.5,
                                   likelihood="multinomial"), (6,))
    assert plain.state_dict().keys() == mult.state_dict().keys()

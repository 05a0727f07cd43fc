"""Splits read in batches: every kind gives the same samples, draws are seeded and
repeatable, training streams reshuffle each epoch, nothing is read whole."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from autocompress.data.split import DatasetSplit, LoaderSplit, TensorSplit, as_split, split_sample

X = torch.arange(40, dtype=torch.float32).view(20, 2)
Y = torch.arange(20) % 3


class Dicts(Dataset):
    def __init__(self):
        self.reads = 0

    def __len__(self):
        return 20

    def __getitem__(self, i):
        self.reads += 1
        return {"input_ids": torch.tensor([i, i + 1]), "attention_mask": torch.ones(2, dtype=torch.int64), "labels": int(Y[i])}


class Stream(IterableDataset):
    def __iter__(self):
        return iter((X[i], Y[i]) for i in range(20))


def _all(split, bs=7):
    xs, ys = zip(*split.batches(bs))
    return xs, torch.cat(ys)


def test_a_tensor_dataset_stays_its_tensors_and_a_loader_is_read_as_given():
    assert isinstance(as_split(TensorDataset(X, Y), name="train"), TensorSplit)
    loader = DataLoader(TensorDataset(X, Y), batch_size=6)
    split = as_split(loader, name="train")
    assert isinstance(split, LoaderSplit) and len(split) == 20
    xs, ys = _all(split)
    assert [len(x) for x in xs] == [6, 6, 6, 2] and torch.equal(ys, Y)


def test_dict_samples_lose_their_target_key_and_keep_int_dtypes():
    split = as_split(Dicts(), name="val")
    assert isinstance(split, DatasetSplit)
    inputs, y = split.head(3)
    assert set(inputs) == {"input_ids", "attention_mask"} and inputs["input_ids"].dtype == torch.int64
    assert inputs["input_ids"][:, 0].tolist() == [0, 1, 2] and y.tolist() == Y[:3].tolist()
    with pytest.raises(ValueError, match="target under 'target'"):
        as_split(Dicts(), name="val", target_key="target").head(1)


def test_draws_are_seeded_the_same_across_kinds_and_bounded():
    t = TensorSplit(X, Y)
    d = DatasetSplit(TensorDataset(X, Y), batch_size=4)
    a, b = t.draw(5, seed=3), d.draw(5, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(t.draw(5, seed=4)[0], a[0])
    assert len(t.draw(100)[1]) == 20  # never more than there is
    ds = Dicts()
    DatasetSplit(ds).draw(4)
    assert ds.reads == 4  # only what was drawn is read


def test_iterable_data_draws_its_first_samples():
    split = as_split(DataLoader(Stream(), batch_size=4), name="train")
    x, y = split.draw(6)
    assert torch.equal(x, X[:6]) and len(split) == 20


def test_training_streams_reshuffle_each_epoch_and_repeat_with_their_seed():
    def indices(split, seed):
        return [idx.tolist() for _, _, idx in itertools.islice(split.stream(8, seed), 5)]

    t = TensorSplit(X, Y)
    first = indices(t, 1)
    assert first == indices(t, 1) and first != indices(t, 2)
    assert len(set(first[0] + first[1])) == 16 and first[:2] != first[2:4]  # 20 rows, batches of 8: two per epoch, then a new permutation
    d = DatasetSplit(TensorDataset(X, Y))
    rows = [x[:, 0].tolist() for x, _, _ in itertools.islice(d.stream(8, 1), 5)]
    assert rows == [[2 * i for i in b] for b in first]  # a Dataset streams the same rows as the tensors


def test_split_sample_rules():
    assert split_sample((1, 2), "labels", "s") == (1, 2)
    assert split_sample([[1, 2], 3], "labels", "s") == ((1, 2), 3)
    with pytest.raises(ValueError, match="must be an \\(inputs, target\\) pair"):
        split_sample((1, 2, 3), "labels", "s")


def test_an_empty_split_says_so():
    with pytest.raises(ValueError, match="the train split is empty"):
        TensorSplit(X[:0], Y[:0], "train").head(2)
    with pytest.raises(ValueError, match="the val split is empty"):
        DatasetSplit([], name="val").head(2)

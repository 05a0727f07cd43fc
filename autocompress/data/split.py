"""A split of a task's data as the pipeline reads it: in batches, never whole.

A sample is `(inputs, target)`, or a dict from which the target key (default "labels") is
popped; inputs follow data.structure (tensor / tuple / dict). Three kinds:

- TensorSplit: tensors already in memory (the demo; a TensorDataset), indexed directly.
- DatasetSplit: a map-style Dataset, read through a DataLoader in batches of `batch_size`
  with its own (or torch's default) collate function.
- LoaderSplit: the user's DataLoader as given (their batch size, collate, workers).

Every split offers one pass in order (`batches`), an endless shuffled stream for training
(`stream`), and a bounded sample (`draw`: a seeded index draw for map-style data, the first
rows for iterable data; the same draw wherever it is taken, so a candidate rebuilt from its
config sees what the search saw)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Iterator, Optional

import torch

from autocompress.data import structure as st

TARGET_KEY = "labels"
EVAL_BATCH = 256


def split_sample(sample: Any, target_key: str, where: str) -> tuple[Any, Any]:
    """(inputs, target) of a sample or a collated batch (ValueError naming `where`)."""
    if isinstance(sample, Mapping):
        if target_key not in sample:
            raise ValueError(f"{where}: a dict sample needs its target under {target_key!r}, got keys {list(sample)!r}")
        inputs = {k: v for k, v in sample.items() if k != target_key}
        return inputs, sample[target_key]
    if isinstance(sample, (tuple, list)) and len(sample) == 2:
        inputs, target = sample
        return (tuple(inputs) if isinstance(inputs, list) else inputs), target
    raise ValueError(f"{where} must be an (inputs, target) pair or a dict with a {target_key!r} key, got {type(sample).__name__}")


class Split:
    """The interface (see the module's doc)."""

    name: str = "split"

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(self, batch_size: int = EVAL_BATCH) -> Iterator[tuple[Any, torch.Tensor]]:
        """One pass over every sample in order: (inputs, targets) batches."""
        raise NotImplementedError

    def stream(self, batch_size: int, seed: int) -> Iterator[tuple[Any, torch.Tensor, Optional[torch.Tensor]]]:
        """Endless training batches (inputs, targets, row indices or None), reshuffled each
        epoch (a DataLoader's own order for LoaderSplit)."""
        raise NotImplementedError

    def draw(self, n: int, seed: int = 0) -> tuple[Any, torch.Tensor]:
        """At most `n` samples collated into one batch (see the module's doc)."""
        raise NotImplementedError

    def head(self, n: int) -> tuple[Any, torch.Tensor]:
        """The first `n` samples (fewer if the split is smaller), one batch."""
        parts, got = [], 0
        for inputs, targets in self.batches(min(n, EVAL_BATCH)):
            parts.append((inputs, targets))
            got += st.rows(inputs)
            if got >= n:
                break
        if not got:
            raise ValueError(f"the {self.name} split is empty")
        inputs = st.cat([p[0] for p in parts])
        targets = torch.cat([torch.as_tensor(p[1]) for p in parts])
        return st.take(inputs, slice(0, n)), targets[:n]

    def sample(self, n: int, seed: int = 0) -> tuple[Any, torch.Tensor]:
        """Every sample in order when there are at most `n`, else draw(n, seed): the bounded
        data of BatchNorm re-estimation and the block warm-up."""
        return self.head(n) if len(self) <= n else self.draw(n, seed)


def _epochs(n: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Index batches of `batch_size` over permutations of range(n), seeded; a permutation's
    remainder too small for a batch is dropped."""
    gen = torch.Generator().manual_seed(seed)
    bs = min(batch_size, n)
    perm, pos = torch.randperm(n, generator=gen), 0
    while True:
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        yield perm[pos : pos + bs]
        pos += bs


class _Endless:
    """A DataLoader batch sampler: _epochs as lists of indices, without end."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed

    def __iter__(self):
        return (idx.tolist() for idx in _epochs(self.n, self.batch_size, self.seed))


def _draw_index(n_total: int, n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


class TensorSplit(Split):
    """Inputs (tensor / tuple / dict, N rows) and targets (N rows) in memory."""

    def __init__(self, x: Any, y: torch.Tensor, name: str = "split"):
        self.x, self.y, self.name = x, y, name

    def __len__(self) -> int:
        return int(len(self.y))

    def batches(self, batch_size: int = EVAL_BATCH):
        for i in range(0, len(self), batch_size):
            yield st.take(self.x, slice(i, i + batch_size)), self.y[i : i + batch_size]

    def stream(self, batch_size: int, seed: int):
        for idx in _epochs(len(self), batch_size, seed):
            yield st.take(self.x, idx), self.y[idx], idx

    def draw(self, n: int, seed: int = 0):
        idx = _draw_index(len(self), n, seed)
        return st.take(self.x, idx), self.y[idx]

    def head(self, n: int):
        if not len(self):
            raise ValueError(f"the {self.name} split is empty")
        return st.take(self.x, slice(0, n)), self.y[:n]


class _Collating(Split):
    """Shared by the Dataset and DataLoader splits: samples through a collate function."""

    def __init__(self, dataset: Any, collate: Any, target_key: str, name: str):
        from torch.utils.data import IterableDataset

        self.dataset, self.collate, self.target_key, self.name = dataset, collate, target_key, name
        self.iterable = isinstance(dataset, IterableDataset)

    def _split(self, batch: Any, where: str) -> tuple[Any, torch.Tensor]:
        inputs, target = split_sample(batch, self.target_key, where)
        st.check_inputs(inputs, where)
        return inputs, torch.as_tensor(target) if not isinstance(target, torch.Tensor) else target

    def draw(self, n: int, seed: int = 0):
        if self.iterable:  # no index: the first n
            return self.head(n)
        idx = _draw_index(len(self.dataset), n, seed)
        return self._split(self.collate([self.dataset[int(i)] for i in idx]), f"the {self.name} split's sample")


class DatasetSplit(_Collating):
    """A map-style Dataset read in batches through a DataLoader (no workers)."""

    def __init__(self, dataset: Any, *, batch_size: Optional[int] = None, collate: Any = None, target_key: str = TARGET_KEY,
                 name: str = "split"):
        from torch.utils.data import default_collate

        super().__init__(dataset, collate or default_collate, target_key, name)
        self.batch_size = batch_size  # None: the fine-tune's batch size from the space, EVAL_BATCH for passes

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, batch_sampler):
        from torch.utils.data import DataLoader

        return DataLoader(self.dataset, batch_sampler=batch_sampler, collate_fn=self.collate)

    def batches(self, batch_size: int = EVAL_BATCH):
        bs = self.batch_size or batch_size
        chunks = [list(range(i, min(i + bs, len(self)))) for i in range(0, len(self), bs)]
        for i, batch in enumerate(self._loader(chunks)):
            yield self._split(batch, f"the {self.name} split's batch {i}")

    def stream(self, batch_size: int, seed: int):
        endless = _Endless(len(self), self.batch_size or batch_size, seed)
        for batch in self._loader(endless):
            yield (*self._split(batch, f"the {self.name} split's batch"), None)


class LoaderSplit(_Collating):
    """The user's DataLoader, iterated as it is (its sampler, batch size, collate, workers);
    a map-style loader's `draw` is an index draw on its dataset through its collate."""

    def __init__(self, loader: Any, *, target_key: str = TARGET_KEY, name: str = "split"):
        super().__init__(loader.dataset, loader.collate_fn, target_key, name)
        self.loader = loader
        self._len: Optional[int] = None

    def __len__(self) -> int:
        if self._len is None:
            try:
                self._len = len(self.dataset)
            except TypeError:  # an iterable dataset without a length: count once
                self._len = sum(st.rows(x) for x, _ in self.batches())
        return self._len

    def batches(self, batch_size: int = EVAL_BATCH):
        for i, batch in enumerate(self.loader):
            yield self._split(batch, f"the {self.name} split's batch {i}")

    def stream(self, batch_size: int, seed: int):
        torch.manual_seed(seed)  # a shuffling loader draws its order from torch's global generator
        for batch in itertools.chain.from_iterable(itertools.repeat(self.loader)):
            yield (*self._split(batch, f"the {self.name} split's batch"), None)


def as_split(data: Any, *, name: str, batch_size: Optional[int] = None, target_key: str = TARGET_KEY) -> Split:
    """A Split over a Dataset, a DataLoader or a Split (a TensorDataset of (x, y) stays the
    tensors it holds)."""
    from torch.utils.data import DataLoader, TensorDataset

    if isinstance(data, Split):
        return data
    if isinstance(data, DataLoader):
        return LoaderSplit(data, target_key=target_key, name=name)
    if isinstance(data, TensorDataset) and len(data.tensors) == 2 and batch_size is None:
        return TensorSplit(*data.tensors, name=name)
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TypeError(f"the {name} split must be a sized Dataset or a DataLoader, got {type(data).__name__}")
    return DatasetSplit(data, batch_size=batch_size, target_key=target_key, name=name)


__all__ = ["DatasetSplit", "EVAL_BATCH", "LoaderSplit", "Split", "TARGET_KEY", "TensorSplit", "as_split", "split_sample"]

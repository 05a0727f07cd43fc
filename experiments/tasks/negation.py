"""Benchmark tasks for transformers, where depth matters: polarity with negation.

A sequence of words, some positive (+1), some negative (-1), some neutral, some 'not'; a
'not' flips the word right after it; the label says whether the sum is positive (ties: the
last polar word's sign). Counting polar words (a bag of words) gives 74%: reading each
word's left neighbour first, then summing, gives all of it. A 1-layer, 1-head model reads
the [CLS] position's one attention average, where a 'not' cannot tell which word it
negates; `experiments/bench_transformers.py` trains the 4-layer teacher and such a model
the same way and records both in results/negation_depth.jsonl (the goal: a gap of at least
5 points).

Two models, trained here once (seeded; AdamW 3e-4 with warm-up and cosine decay: 1e-3 left
the post-LayerNorm BERT at chance for 1,500 steps) and cached under $AUTOCOMPRESS_CACHE
(default ~/.cache/autocompress), keyed by this file's source:

  text: a Hugging Face BERT encoder (4 layers, hidden 128, 4 heads, intermediate 512,
        vocabulary 510), 64 token ids with an attention mask: [CLS], then 32-63 words, the
        rest padding.
        autocompress search --task experiments/tasks/negation.py:text_task
  vit:  a Hugging Face ViT (4 layers, hidden 128, 4 heads, intermediate 512) on 32x32
        one-channel images of 8x8 patches of 4x4 pixels (64 patches, in reading order, a
        word each): a polar patch has +1 or -1 added to its top row, a 'not' patch a
        checkerboard to its bottom row, all in noise.
        autocompress search --task experiments/tasks/negation.py:vit_task

The teacher is trained on fresh samples every step; the task's train split holds 20,000
(for the search's fine-tunes), val 2,000 and test 2,000. The file stands alone, as a user's
task file does."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

SEQ, CLASSES, SEED = 64, 2, 11
N_TRAIN, N_VAL, N_TEST = 20_000, 2_000, 2_000
WIDTH, LAYERS, HEADS, FFN = 128, 4, 4, 512
STEPS, BATCH, LR = 3_000, 32, 3e-4
NOT, POS0, NEG0, NEUTRAL0, WORDS = 2, 10, 110, 210, 100  # 0 pad, 1 [CLS]; 100 positive, 100 negative, 300 neutral words
VOCAB = NEUTRAL0 + 3 * WORDS
P_NOT, P_POLAR = 0.15, 0.3


def sentences(n: int, gen: torch.Generator, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kind, polarity, labels) of n sequences of `length` words: kind 0 neutral, 1 polar, 2
    'not'; a polar word counts +1 or -1, flipped when the word before it is 'not'; the label
    says whether the sum is positive (ties are broken by the last polar word's sign)."""
    u = torch.rand(n, length, generator=gen)
    kind = torch.where(u < P_NOT, 2, torch.where(u < P_NOT + P_POLAR, 1, 0))
    polarity = torch.where(torch.rand(n, length, generator=gen) < 0.5, 1, -1) * (kind == 1)
    negated = torch.zeros_like(kind, dtype=torch.bool)
    negated[:, 1:] = kind[:, :-1] == 2
    value = torch.where(negated, -polarity, polarity)
    total = value.sum(1)
    last = torch.stack([row[row != 0][-1] if (row != 0).any() else torch.tensor(1) for row in value])
    return kind, polarity, ((total > 0) | ((total == 0) & (last > 0))).long()


class Tokens(Dataset):
    """{"input_ids", "attention_mask", "labels"}: [CLS] then 63 words (a random tail padded,
    the words after the padding not counted)."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        length = torch.randint(SEQ // 2, SEQ, (n,), generator=g)
        kind, polarity, _ = sentences(n, g, SEQ - 1)
        kind[torch.arange(SEQ - 1)[None] >= length[:, None]] = 0
        polarity = polarity * (kind == 1)
        words = torch.randint(0, WORDS, (n, SEQ - 1), generator=g)
        ids = torch.where(kind == 2, NOT, torch.where(polarity > 0, POS0 + words, torch.where(polarity < 0, NEG0 + words,
                                                                                              NEUTRAL0 + torch.randint(0, 3 * WORDS, (n, SEQ - 1), generator=g))))
        negated = torch.zeros_like(kind, dtype=torch.bool)
        negated[:, 1:] = kind[:, :-1] == 2
        value = torch.where(negated, -polarity, polarity)
        last = torch.stack([row[row != 0][-1] if (row != 0).any() else torch.tensor(1) for row in value])
        self.labels = ((value.sum(1) > 0) | ((value.sum(1) == 0) & (last > 0))).long()
        self.ids = torch.cat([torch.ones(n, 1, dtype=torch.long), ids], dim=1)
        pad = torch.arange(SEQ)[None] > length[:, None]
        self.ids[pad] = 0
        self.mask = (~pad).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def images(n: int, seed: int) -> TensorDataset:
    """(image 1x32x32, label): 64 patches of 4x4 pixels in reading order, each a word: a
    polar patch shows +1 or -1 in its top row (its polarity), a 'not' patch a checkerboard in
    its bottom row, in noise; the label as for text (a 'not' flips the patch after it)."""
    g = torch.Generator().manual_seed(seed)
    kind, polarity, labels = sentences(n, g, SEQ)
    cells = 0.3 * torch.randn(n, SEQ, 4, 4, generator=g)
    cells[:, :, 0, :] += polarity[..., None].float()
    cells[:, :, 3, :] += (kind == 2)[..., None].float() * torch.tensor([1.0, -1.0, 1.0, -1.0])
    img = cells.reshape(n, 8, 8, 4, 4).permute(0, 1, 3, 2, 4).reshape(n, 1, 32, 32)
    return TensorDataset(img.contiguous(), labels)


def _cache(name: str) -> Path:
    key = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]
    return Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress")) / "teachers" / f"negation-{name}-{key}.pt"


def text_model(layers: int = LAYERS, heads: int = HEADS) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(SEED)
    return BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=layers, num_attention_heads=heads,
                                                    intermediate_size=FFN, max_position_embeddings=SEQ, num_labels=CLASSES,
                                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def vit_model(layers: int = LAYERS, heads: int = HEADS) -> torch.nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(SEED)
    return ViTForImageClassification(ViTConfig(image_size=32, patch_size=4, num_channels=1, hidden_size=WIDTH, num_hidden_layers=layers,
                                               num_attention_heads=heads, intermediate_size=FFN, num_labels=CLASSES,
                                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def _batch(data, idx):
    if isinstance(data, Tokens):
        return {"input_ids": data.ids[idx], "attention_mask": data.mask[idx]}, data.labels[idx]
    x, y = data.tensors
    return x[idx], y[idx]


def _logits(model, inputs):
    return (model(**inputs) if isinstance(inputs, dict) else model(inputs)).logits


def train(model: torch.nn.Module, make, *, steps: int = STEPS, log=None) -> torch.nn.Module:
    """AdamW with warm-up and cosine decay, a fresh batch `make(BATCH, seed)` every step
    (the generator is cheap, so no sample is seen twice: with a fixed 20,000 the 4-layer
    model memorised them instead of learning the negation)."""
    opt = torch.optim.AdamW(model.parameters(), LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps, pct_start=0.05)
    model.train()
    for step in range(steps):
        data = make(BATCH, 100_000 + step)
        inputs, y = _batch(data, torch.arange(BATCH))
        loss = F.cross_entropy(_logits(model, inputs), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step + 1) % 500 == 0:
            log(f"step {step + 1}/{steps}: loss {loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, data) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(data), 256):
        inputs, y = _batch(data, torch.arange(i, min(i + 256, len(data))))
        hits += int((_logits(model, inputs).argmax(-1) == y).sum())
    return hits / len(data)


def splits(name: str):
    make = Tokens if name == "text" else images
    return make(N_TRAIN, SEED), make(N_VAL, SEED + 1), make(N_TEST, SEED + 2)


def teacher(name: str, *, log=None) -> torch.nn.Module:
    """The trained 4-layer model (trained on first use, then read from the cache)."""
    model = text_model() if name == "text" else vit_model()
    path = _cache(name)
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train(model, Tokens if name == "text" else images, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def _task(name: str):
    import autocompress as ac

    train_split, val, test = splits(name)
    return ac.Task(teacher(name), train=train_split, val=val, test=test, batch_size=64, name=f"negation-{name}")


def text_task():
    return _task("text")


def vit_task():
    return _task("vit")

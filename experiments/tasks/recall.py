"""Benchmark tasks for transformers, where depth should matter: associative recall.

Sixteen cells each hold a key (16 distinct keys of 64) and a class (0-7); a query names one
of the keys; the label is the class of the cell with that key. The [CLS] position (a ViT's
class token) reads its first layer's attention with a query that cannot depend on the
query key, so one layer cannot select the matching cell; two can (each cell compares its key
with the query, then [CLS] reads the cell that matched). `experiments/bench_transformers.py`
trains the 4-layer teacher and a 1-layer, 1-head model of the same width the same way and
records both (the goal: a gap of at least 5 points).

Status (2026-12-05): not yet shown to be learnable in the training budget below. On the
2-core AMD EPYC, one thread, batch 32, AdamW 1e-3 with warm-up and cosine decay, the
4-layer BERT stayed at chance (val 12.9%, loss 2.08) after 1,500 steps (283 s); an earlier
design, two-hop pointer chasing over positions, stayed at chance after 1,500 steps too.
These tasks are known to be learned after a plateau; whether STEPS = 4,000 is past it has not
been measured.

Two models, trained here once (seeded) and cached under $AUTOCOMPRESS_CACHE (default
~/.cache/autocompress), keyed by this file's source:

  text: a Hugging Face BERT encoder (4 layers, hidden 128, 4 heads, intermediate 512,
        vocabulary 1,176), 64 token ids with an attention mask (the tail of some sequences
        padded): position 0 [CLS], position 1 the query (token 612 + key), positions 2-17
        the cells (token 100 + 8 * key + class), then filler tokens.
        autocompress search --task experiments/tasks/recall.py:text_task
  vit:  a Hugging Face ViT (4 layers, hidden 128, 4 heads, intermediate 512) on 32x32
        one-channel images of 8x8 patches of 4x4 pixels (64 patches): patch 0 shows the
        query's 6 key bits, patches 1-16 the cells' 6 key bits and 3 class bits as +-1
        pixels, in noise; the rest is noise.
        autocompress search --task experiments/tasks/recall.py:vit_task

20,000 training samples, 2,000 val and 2,000 test. The file stands alone, as a user's
task file does."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

SEQ, CELLS, KEYS, CLASSES, SEED = 64, 16, 64, 8, 11
N_TRAIN, N_VAL, N_TEST = 20_000, 2_000, 2_000
WIDTH, LAYERS, HEADS, FFN = 128, 4, 4, 512
STEPS, BATCH, LR = 4_000, 32, 1e-3
TOKEN0 = 100  # cell tokens TOKEN0 + CLASSES * key + class, the query token QUERY0 + key; 0 pad, 1 [CLS]
QUERY0 = TOKEN0 + KEYS * CLASSES
FILLER0 = QUERY0 + KEYS
VOCAB = FILLER0 + 500


def recall(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query keys, cell keys, cell classes, labels) of n problems: CELLS cells with distinct
    keys (of KEYS) and random classes; the query is one of the cells' keys; the label is the
    class of the cell with the query's key."""
    keys = torch.argsort(torch.rand(n, KEYS, generator=gen), dim=1)[:, :CELLS]
    classes = torch.randint(0, CLASSES, (n, CELLS), generator=gen)
    which = torch.randint(0, CELLS, (n,), generator=gen)
    rows = torch.arange(n)
    return keys[rows, which], keys, classes, classes[rows, which]


class Tokens(Dataset):
    """{"input_ids", "attention_mask", "labels"}: [CLS], the 16 cells, then filler tokens;
    a random part of the fillers at the end is padding."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        query, keys, classes, self.labels = recall(n, g)
        self.ids = torch.randint(FILLER0, VOCAB, (n, SEQ), generator=g)
        self.ids[:, 0] = 1
        self.ids[:, 1] = QUERY0 + query
        self.ids[:, 2:2 + CELLS] = TOKEN0 + CLASSES * keys + classes
        length = torch.randint(2 + CELLS, SEQ + 1, (n,), generator=g)
        pad = torch.arange(SEQ)[None] >= length[:, None]
        self.ids[pad] = 0
        self.mask = (~pad).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def images(n: int, seed: int) -> TensorDataset:
    """(image 1x32x32, label): patch 0 (4x4 pixels, row-major) shows the query's 6 key bits,
    patches 1-16 are the cells, each showing its key's 6 bits and its class's 3 bits as +-1
    pixels; the other pixels and patches are noise."""
    g = torch.Generator().manual_seed(seed)
    query, keys, classes, labels = recall(n, g)
    cells = torch.zeros(n, SEQ, 16)
    cells[:, 0, :6] = 2 * ((query[:, None] >> torch.arange(6)) & 1).float() - 1
    cells[:, 0, 6:9] = 0.0
    bits = torch.cat([(keys[..., None] >> torch.arange(6)) & 1, (classes[..., None] >> torch.arange(3)) & 1], dim=-1).float()
    cells[:, 1:1 + CELLS, :9] = 2 * bits - 1
    cells[:, 1:1 + CELLS, 9] = 1.0  # marks a cell
    cells += 0.3 * torch.randn(n, SEQ, 16, generator=g)
    img = cells.reshape(n, 8, 8, 4, 4).permute(0, 1, 3, 2, 4).reshape(n, 1, 32, 32)
    return TensorDataset(img.contiguous(), labels)


def _cache(name: str) -> Path:
    key = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]
    return Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress")) / "teachers" / f"recall-{name}-{key}.pt"


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


def train(model: torch.nn.Module, data, *, steps: int = STEPS, log=None) -> torch.nn.Module:
    """AdamW with warm-up and cosine decay, seeded batches."""
    opt = torch.optim.AdamW(model.parameters(), LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for step in range(steps):
        inputs, y = _batch(data, torch.randint(0, len(data), (BATCH,), generator=gen))
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
    train(model, splits(name)[0], log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def _task(name: str):
    import autocompress as ac

    train_split, val, test = splits(name)
    return ac.Task(teacher(name), train=train_split, val=val, test=test, batch_size=64, name=f"recall-{name}")


def text_task():
    return _task("text")


def vit_task():
    return _task("vit")

"""Benchmark tasks for transformers where one attention average is not enough: four regions,
each with its own rule.

A sequence of 64 positions in four regions (the text's [CLS] aside). Region k votes yes when
most of its words are in word set S_k (text), or when its patches, summed, point along
direction d_k (images); the label says whether at least two regions vote yes (61% of
the text samples, 52% of the images). A model that reads each region separately (a head per region, or a layer that
builds a per-region summary) gets all of it. A 1-layer, 1-head model gets one softmax
average over the whole sequence: its attention score is (up to LayerNorm) a function of the word plus a
function of the position, so it cannot weigh 'word in S_k' by 'position in region k', and
every region's words leak into every other region's count.
`experiments/bench_transformers.py` trains the 4-layer teacher and such a model the same
way and records both in results/regions_depth.jsonl (the goal: a gap of at least 5 points).

Training: AdamW 3e-4 with warm-up and cosine decay (1e-3 left a post-LayerNorm BERT at
chance), a fresh batch every step, position embeddings started from sines and cosines (on a
first version of the image task, whose majority class was 67.5%, 2,000 steps from the default
random start reached 71% val, from the sines 80%). Models, trained here once (seeded) and
cached under $AUTOCOMPRESS_CACHE (default ~/.cache/autocompress), keyed by this file's source:

  text: a Hugging Face BERT encoder (4 layers, hidden 128, 4 heads, intermediate 512,
        vocabulary 66), 64 token ids with an attention mask: [CLS], then 63 words.
        autocompress search --task experiments/tasks/regions.py:text_task
  vit:  a Hugging Face ViT (4 layers, hidden 128, 4 heads, intermediate 512) on 32x32
        one-channel noise images: 8x8 patches of 4x4 pixels, the regions are the four
        quadrants.
        autocompress search --task experiments/tasks/regions.py:vit_task

The task's train split holds 20,000 samples (for the search's fine-tunes), val 2,000 and
test 2,000. The file stands alone, as a user's task file does."""

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
STEPS, BATCH, LR = 6_000, 32, 3e-4
WORDS, WORD0 = 64, 2  # 0 padding, 1 [CLS], then the words
VOCAB = WORD0 + WORDS

_rules = torch.Generator().manual_seed(7)
SETS = torch.rand(4, WORDS, generator=_rules) < 0.5  # S_k: region k's word set
DIRS = torch.nn.functional.normalize(torch.randn(4, 16, generator=_rules), dim=1)  # d_k: region k's pixel direction
TEXT_REGIONS = [torch.arange(1, 17), torch.arange(17, 33), torch.arange(33, 49), torch.arange(49, 64)]
_grid = torch.arange(64).reshape(8, 8)
IMAGE_REGIONS = [_grid[:4, :4].flatten(), _grid[:4, 4:].flatten(), _grid[4:, :4].flatten(), _grid[4:, 4:].flatten()]
# a sum of 16 standard normals along a unit direction is N(0, 16): a vote when above this
IMAGE_THRESHOLD = 4.0 * 0.2533  # the standard normal's 60th percentile, so P(vote) = 0.4


def label(votes: torch.Tensor) -> torch.Tensor:
    return (votes.sum(1) >= 2).long()


class Tokens(Dataset):
    """{"input_ids", "attention_mask", "labels"}: [CLS] then 63 words; region k votes yes when
    more than half its words are in S_k
    (9 of 16, 8 of the last region's 15; 61% of the labels are 1)."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        words = torch.randint(0, WORDS, (n, SEQ - 1), generator=g)
        self.ids = torch.cat([torch.ones(n, 1, dtype=torch.long), WORD0 + words], dim=1)
        votes = torch.stack([SETS[k, self.ids[:, r] - WORD0].sum(1) * 2 > len(r) for k, r in enumerate(TEXT_REGIONS)], 1)
        self.labels = label(votes)
        self.mask = torch.ones_like(self.ids)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def images(n: int, seed: int) -> TensorDataset:
    """(image 1x32x32 of standard normal noise, label): quadrant k votes yes when its 16
    patches, summed, have a projection on d_k above IMAGE_THRESHOLD."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randn(n, SEQ, 16, generator=g)
    votes = torch.stack([(cells[:, r].sum(1) @ DIRS[k]) > IMAGE_THRESHOLD for k, r in enumerate(IMAGE_REGIONS)], 1)
    img = cells.reshape(n, 8, 8, 4, 4).permute(0, 1, 3, 2, 4).reshape(n, 1, 32, 32)
    return TensorDataset(img.contiguous(), label(votes))


def _cache(name: str) -> Path:
    key = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]
    return Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress")) / "teachers" / f"regions-{name}-{key}.pt"


def _sincos(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float)[:, None]
    angle = pos / (100.0 ** (torch.arange(0, d, 2, dtype=torch.float) / d))
    out = torch.zeros(n, d)
    out[:, 0::2], out[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return out


def text_model(layers: int = LAYERS, heads: int = HEADS) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(SEED)
    model = BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=layers, num_attention_heads=heads,
                                                     intermediate_size=FFN, max_position_embeddings=SEQ, num_labels=CLASSES,
                                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    with torch.no_grad():
        model.bert.embeddings.position_embeddings.weight.copy_(0.1 * _sincos(SEQ, WIDTH))
    return model


def vit_model(layers: int = LAYERS, heads: int = HEADS) -> torch.nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(SEED)
    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=4, num_channels=1, hidden_size=WIDTH, num_hidden_layers=layers,
                                                num_attention_heads=heads, intermediate_size=FFN, num_labels=CLASSES,
                                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    rows, cols = torch.arange(8).repeat_interleave(8), torch.arange(8).repeat(8)
    with torch.no_grad():  # [CLS] at 0, then the patches in reading order: half the width for the row, half for the column
        pe = model.vit.embeddings.position_embeddings
        pe[0, 0] = 0.0
        pe[0, 1:] = 0.5 * torch.cat([_sincos(8, WIDTH // 2)[rows], _sincos(8, WIDTH // 2)[cols]], dim=1)
    return model


def _batch(data, idx):
    if isinstance(data, Tokens):
        return {"input_ids": data.ids[idx], "attention_mask": data.mask[idx]}, data.labels[idx]
    x, y = data.tensors
    return x[idx], y[idx]


def _logits(model, inputs):
    return (model(**inputs) if isinstance(inputs, dict) else model(inputs)).logits


def train(model: torch.nn.Module, make, *, steps: int = STEPS, log=None) -> torch.nn.Module:
    """AdamW with warm-up and cosine decay, a fresh batch `make(BATCH, seed)` every step."""
    opt = torch.optim.AdamW(model.parameters(), LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps, pct_start=0.05)
    model.train()
    for step in range(steps):
        inputs, y = _batch(make(BATCH, 100_000 + step), torch.arange(BATCH))
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


def maker(name: str):
    return Tokens if name == "text" else images


def model_of(name: str, layers: int = LAYERS, heads: int = HEADS) -> torch.nn.Module:
    return text_model(layers, heads) if name == "text" else vit_model(layers, heads)


def splits(name: str):
    make = maker(name)
    return make(N_TRAIN, SEED), make(N_VAL, SEED + 1), make(N_TEST, SEED + 2)


def teacher(name: str, *, log=None) -> torch.nn.Module:
    """The trained 4-layer model (trained on first use, then read from the cache)."""
    model = model_of(name)
    path = _cache(name)
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train(model, maker(name), log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def _task(name: str):
    import autocompress as ac

    train_split, val, test = splits(name)
    return ac.Task(teacher(name), train=train_split, val=val, test=test, batch_size=64, name=f"regions-{name}")


def text_task():
    return _task("text")


def vit_task():
    return _task("vit")


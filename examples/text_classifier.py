"""A Hugging Face text classifier taking `input_ids` and `attention_mask`.

    autocompress search --task examples/text_classifier.py:task --budget 30

The data are dicts of tensors with the class under "labels" (what a tokenizer and a
Hugging Face dataset give); autocompress pops "labels" and calls model(**inputs), so the
model returns its logits and never computes a loss of its own. Here the model is a small
BERT built from a config and trained for a few seconds on a toy problem (does token 7
occur in the unpadded part?), so that the example runs offline; yours is your trained
model (e.g. AutoModelForSequenceClassification.from_pretrained(...)) and your tokenized
data."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

import autocompress as ac

SEQ = 16
VOCAB = 50


class Tokens(Dataset):
    """Padded token ids; class 1 when token 7 occurs before the padding."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, SEQ), generator=g)
        self.mask = torch.ones(n, SEQ, dtype=torch.int64)
        for i, length in enumerate(torch.randint(SEQ // 2, SEQ + 1, (n,), generator=g).tolist()):
            self.ids[i, length:] = 0
            self.mask[i, length:] = 0
        self.labels = (self.ids == 7).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def trained_bert(train: Dataset, *, steps: int = 80) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=SEQ, num_labels=2)
    model = BertForSequenceClassification(config)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    done = 0
    while done < steps:
        for batch in loader:
            loss = model(**batch).loss  # with "labels" the model computes its own loss: training here, not in the search
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()


def task() -> ac.Task:
    train, val, test = Tokens(512, 0), Tokens(128, 1), Tokens(128, 2)
    return ac.Task(trained_bert(train), train=train, val=val, test=test, batch_size=32,
                   dynamic_axes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}, name="text_classifier")

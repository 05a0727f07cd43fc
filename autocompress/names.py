"""Names several layers share, in one place: weight bit widths and the grammar of block
names. Pure (no torch, no onnxruntime)."""

from __future__ import annotations

import re

# Weight bit widths a candidate's layers can be exported with ("fp32": left float).
BITS = ("fp32", "int8", "int4")

# Block names, written like timm's block strings (transforms.blocks builds them).
BLOCK_PATTERNS: dict[str, re.Pattern[str]] = {
    "mbconv": re.compile(r"mbconv_e(?P<expand>\d+)_k(?P<kernel>\d+)"),
    "shuffle_v2": re.compile(r"shuffle_v2"),
    "dwsep": re.compile(r"dwsep_k(?P<kernel>\d+)"),
    "skip": re.compile(r"skip"),
    "keep": re.compile(r"keep"),
}

VALID_FORMS = (
    "mbconv_e{E}_k{K} (E >= 1, odd K >= 1), shuffle_v2, dwsep_k{K} (odd K >= 1), skip, "
    "keep (the original block, handled by the caller)"
)


def parse_block(name: str) -> tuple[str, dict[str, int]]:
    """`name` -> (kind, params), e.g. "mbconv_e6_k3" -> ("mbconv", {"expand": 6, "kernel": 3}).
    Numbers must be written canonically (no leading zeros), so one block has one name.
    Raises ValueError for anything else, listing the valid forms."""
    for kind, pattern in BLOCK_PATTERNS.items():
        m = pattern.fullmatch(name)
        if m is None:
            continue
        params = {}
        for key, text in m.groupdict().items():
            if str(int(text)) != text:
                raise ValueError(f"block {name!r}: write {key} without leading zeros")
            params[key] = int(text)
        if params.get("expand", 1) < 1:
            raise ValueError(f"block {name!r}: expansion E must be >= 1")
        k = params.get("kernel", 1)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"block {name!r}: kernel K must be odd and >= 1 (padding K//2 keeps the size)")
        return kind, params
    raise ValueError(f"unknown block {name!r}; valid forms: {VALID_FORMS}")



# Channel-importance criteria of structured pruning (transforms.prune).
PRUNE_CRITERIA = ("l1", "l2", "act_mean", "act_zero")

# The folder of a run directory (or of a trial process's scratch space) that holds one
# folder per trial, trials/N/, with its model.onnx and model.pt.
# A run directory's fine-tuned float models shared by candidates (pipeline.FloatCache), removed when a search ends.
FLOAT_CACHE_DIR = "float-cache"
TRIALS_DIR = "trials"


__all__ = ["BITS", "BLOCK_PATTERNS", "FLOAT_CACHE_DIR", "PRUNE_CRITERIA", "TRIALS_DIR", "VALID_FORMS", "parse_block"]

"""Short names of trials: the `label` column when a run has it, else the description with
what is switched off and the key=value details left out."""

from __future__ import annotations

import math

from autocompress.report.labels import row_label, short_description, shorten, trial_tag


def test_short_description_drops_what_is_off_and_the_details():
    assert short_description("no prune · kd 10 a=0.5 T=4 · int8 qop/u8") == "kd 10 · int8 qop/u8"
    assert short_description("block1=mbconv_e3_k3 · prune 0.5 l1 · fp32") == "block1=mbconv_e3_k3 · prune 0.5 l1 · fp32"
    assert short_description("no prune · no fine-tune") == "no prune"  # nothing left: the first part


def test_a_label_wins_over_the_description_and_a_missing_one_falls_back():
    row = {"number": 3, "label": "p.5 q8", "description": "prune 0.5 l1 · int8 qop/u8"}
    assert row_label(row) == "p.5 q8" and trial_tag(row) == "#3 p.5 q8"
    assert row_label({**row, "label": math.nan}) == "prune 0.5 l1 · int8 qop/u8"
    assert trial_tag({"number": 4}) == "#4"


def test_shorten_marks_the_cut():
    assert shorten("abcdef", 10) == "abcdef"
    cut = shorten("prune 0.5 l1 · kd 10 · int8 qop/u8", 12)
    assert len(cut) == 12 and cut.endswith("…")

"""The structured start: after the hand recipes, climb from the fastest usable candidate one
step of compression at a time (NetAdapt's per-layer moves, measured by full candidates),
before the sampler takes over. Pure: it reads finished trials and says which to run next.

A round proposes moves from its base (the fastest candidate within the climb's limit so far):
each technique's `stronger` steps (autocompress.techniques.Move) applied to the base's trial
parameters. The first rounds move every segment of one technique at once; when such a round
no longer pays, the rounds move one segment (or block) at a time, and when those no longer
pay, one segment at a time by a finer step (FINE of a range's step: prune +0.05). After a
round, the moves that paid (usable, and faster or much smaller than the base) are combined
into one candidate. The climb stops when a round of fine moves pays nothing, or at
CLIMB_SHARE of the budget; the sampler has the trials after it, and every climb trial
informs it; a sampled trial that beats the climb's base starts a new round from it.

A move that changes the model's structure on a base without fine-tuning (the int8 teacher)
gets the recipes' distillation fine-tune: a pruned model without one is broken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

CLIMB_LIMIT = 1.0  # points of val accuracy a climb step may lose when no --max-acc-drop is given
CLIMB_SHARE = 0.8  # the climb plans trials up to this share of the budget
FASTER = 0.98  # a move pays when its latency ratio is below FASTER x its base's ...
SMALLER = 0.9  # ... or it is no slower (within 1 / FASTER) and at most SMALLER x the size
FINE = 1 / 3  # the last rounds' steps, of a range's usual step (prune +0.05 instead of +0.15)
MODES = ("whole", "parts", "fine")  # every segment at once; one at a time; one at a time, finer

ROUND, KIND, BASE, MODE, WHAT = "climb_round", "climb", "climb_base", "climb_mode", "climb_what"  # trial attributes
ATTRS = (ROUND, KIND, BASE, MODE, WHAT)


@dataclass(frozen=True)
class Done:
    """A finished trial as the climb reads it: its params, accuracy drop (points), latency
    ratio and size (None unless it completed), and its climb attributes."""

    number: int
    params: Mapping[str, Any]
    drop: Optional[float] = None
    ratio: Optional[float] = None
    size: Optional[float] = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def usable(self, limit: float) -> bool:
        return self.drop is not None and self.ratio is not None and self.drop <= limit


@dataclass(frozen=True)
class Step:
    """A trial the climb asks for: its params and the attributes that place it in the climb."""

    params: dict[str, Any]
    attrs: dict[str, Any]


def better(a: Done, b: Done) -> bool:
    """Whether `a` pays over `b`: faster, or as fast and much smaller."""
    if a.ratio < FASTER * b.ratio:
        return True
    return a.ratio * FASTER <= b.ratio and a.size is not None and b.size is not None and a.size <= SMALLER * b.size


def best(done: Sequence[Done], limit: float) -> Optional[Done]:
    """The fastest usable trial (the smaller on a tie; the earlier on a tie of both)."""
    ok = [d for d in done if d.usable(limit)]
    return min(ok, key=lambda d: (d.ratio, d.size if d.size is not None else math.inf, d.number)) if ok else None


class _Filling:
    """A TrialLike that answers from `params` and fills what they lack (a choice: its first
    value; a range: its middle, geometric for a log range), recording every answer: the
    params of the candidate exactly as a trial would hold them."""

    def __init__(self, params: Mapping[str, Any]):
        self.params = params
        self.asked: dict[str, Any] = {}

    def _answer(self, name: str, default: Any) -> Any:
        value = self.params[name] if name in self.params else default
        self.asked[name] = value
        return value

    def suggest_float(self, name, low, high, *, step=None, log=False):
        mid = math.sqrt(low * high) if log else (low + high) / 2
        if step:
            mid = round(min(low + round((mid - low) / step) * step, high), 10)
        return self._answer(name, mid)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        mid = math.sqrt(low * high) if log and low > 0 else (low + high) / 2
        return self._answer(name, int(low + round((mid - low) / step) * step))

    def suggest_categorical(self, name, choices):
        return self._answer(name, list(choices)[0])


def complete(space, params: Mapping[str, Any], fine_tune: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """(the full trial params, the candidate) of `params` in `space`; a structural change
    without fine-tuning gets `fine_tune` (finetune.* and distill.* params)."""
    from autocompress.techniques import pipeline_order

    filling = _Filling(params)
    cfg = space.suggest(filling)
    structural = any(t.is_active(cfg[t.name]) for t in pipeline_order("model"))
    if structural and cfg.finetune.steps <= 0 and fine_tune:
        keep = {k: v for k, v in params.items() if not k.startswith(("finetune.", "distill."))}
        filling = _Filling({**keep, **fine_tune})
        cfg = space.suggest(filling)
    return filling.asked, cfg


def _moves(space, base: Done, mode: str, rnd: int, seen: set[str], fine_tune: Mapping[str, Any]) -> list[Step]:
    from autocompress.techniques import techniques

    out = []
    for t in techniques():
        moves = t.stronger(space.spec(t.name), base.params, scale=FINE if mode == "fine" else 1.0)
        wholes, parts = [m for m in moves if m.whole], [m for m in moves if not m.whole]
        for move in wholes if mode == "whole" else (parts or wholes):  # a technique of one part moves it whole
            params, cfg = complete(space, {**base.params, **move.changes}, fine_tune)
            if cfg.id in seen:
                continue
            seen.add(cfg.id)
            out.append(Step(params, {ROUND: rnd, KIND: "move", BASE: base.number, MODE: mode, WHAT: move.what}))
    return out


def _combo(space, base: Done, paying: Sequence[Done], rnd: int, mode: str, seen: set[str], fine_tune) -> list[Step]:
    merged = dict(base.params)
    for d in paying:
        merged.update({k: v for k, v in d.params.items() if base.params.get(k) != v})
    params, cfg = complete(space, merged, fine_tune)
    if cfg.id in seen:
        return []
    what = " + ".join(str(d.attrs.get(WHAT, f"#{d.number}")) for d in paying)
    return [Step(params, {ROUND: rnd, KIND: "combo", BASE: base.number, MODE: mode, WHAT: what})]


def _ids(space, done: Sequence[Done]) -> set[str]:
    out = set()
    for d in done:
        try:
            out.add(space.config_from_params(d.params).id)
        except Exception:  # noqa: BLE001 - a trial of another space version: it just cannot be a duplicate
            pass
    return out


def plan(space, done: Sequence[Done], *, limit: float, budget: int, started: int,
         fine_tune: Mapping[str, Any]) -> list[Step]:
    """The climb's next trials, given every finished trial (`done`), the climb's accuracy-drop
    limit, the search's budget and the trials started so far (asked or waiting). [] when the
    climb is over or nothing is to be added now. Deterministic: a resumed run plans the same."""
    cap = math.ceil(CLIMB_SHARE * budget) - started
    if cap <= 0:
        return []
    by_number = {d.number: d for d in done}
    seen = _ids(space, done)
    rounds = [d for d in done if ROUND in d.attrs]
    rnd = max((int(d.attrs[ROUND]) for d in rounds), default=0)
    if rnd == 0:
        base = best(done, limit)
        if base is None:
            return []
        return _first(space, base, 1, "whole", seen, fine_tune)[:cap]
    last = [d for d in rounds if int(d.attrs[ROUND]) == rnd]
    base, mode = by_number.get(int(last[0].attrs[BASE])), str(last[0].attrs[MODE])
    if base is None:
        return []
    if not any(d.attrs.get(KIND) == "combo" for d in last):
        paying = [d for d in last if d.usable(limit) and better(d, base)]
        if len(paying) >= 2:
            combo = _combo(space, base, paying, rnd, mode, seen, fine_tune)
            if combo:
                return combo
    now = best(done, limit)
    if now is not None and now.number != base.number and better(now, base):
        return _first(space, now, rnd + 1, mode, seen, fine_tune)[:cap]
    for later in MODES[MODES.index(mode) + 1:]:  # this round paid nothing: smaller moves, from the same base
        steps = _moves(space, base, later, rnd + 1, seen, fine_tune)
        if steps:
            return steps[:cap]
    return []


def _first(space, base: Done, rnd: int, mode: str, seen: set[str], fine_tune) -> list[Step]:
    """The moves of a round in `mode`, or in the first later mode with anything to move."""
    for m in MODES[MODES.index(mode):]:
        steps = _moves(space, base, m, rnd, seen, fine_tune)
        if steps:
            return steps
    return []


__all__ = ["ATTRS", "CLIMB_LIMIT", "CLIMB_SHARE", "Done", "Step", "best", "better", "complete", "plan"]

"""The metrics candidates are judged by (evaluation.metrics): built-ins on known outputs,
a callable's outputs as the model returned them, directions and units of drops, and the
one-line errors for what is not one finite number."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autocompress.evaluation.metrics import BUILTIN, Metric, as_returned, checked, resolve

SCORES = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
CLASSES = np.array([1, 0, 1, 1])


def test_builtin_classification_metrics_on_known_scores():
    assert BUILTIN["accuracy"]({"logits": SCORES}, CLASSES) == pytest.approx(0.5)  # rows 0 and 1
    assert BUILTIN["top5"]({"logits": SCORES}, CLASSES) == pytest.approx(1.0)  # 3 classes: top 3 holds every class
    wide = np.tile(np.arange(10.0), (2, 1))  # class 9 scores highest, class 0 lowest
    assert BUILTIN["top5"]({"logits": wide}, np.array([5, 4])) == pytest.approx(0.5)  # 5..9 are the top 5


def test_builtin_regression_metrics_read_the_primary_output():
    outs = {"pred": np.array([[1.0], [2.0], [4.0]]), "other": np.zeros((3, 7))}
    y = np.array([1.0, 3.0, 2.0])
    assert BUILTIN["mse"](outs, y) == pytest.approx((0 + 1 + 4) / 3)
    assert BUILTIN["mae"](outs, y) == pytest.approx((0 + 1 + 2) / 3)
    with pytest.raises(ValueError, match="the model's output has 7 values per sample, the target 1"):
        BUILTIN["mse"]({"x": np.zeros((3, 7))}, y)


def test_drops_are_points_for_accuracy_and_units_with_direction_otherwise():
    acc, mse = BUILTIN["accuracy"], BUILTIN["mse"]
    assert acc.drop(0.9, 0.85) == pytest.approx(5.0) and acc.drop(0.9, 0.95) == pytest.approx(-5.0)
    assert mse.drop(0.2, 0.25) == pytest.approx(0.05) and mse.drop(0.2, 0.1) == pytest.approx(-0.1)
    assert acc.score(0.9) == 0.9 and mse.score(0.2) == -0.2
    assert acc.drop_reference(0.9) == 10.0 and mse.drop_reference(0.2) == pytest.approx(0.02)
    assert (acc.column("val"), acc.drop_column) == ("val_accuracy", "acc_drop_pts")
    assert (mse.column("test"), mse.drop_column) == ("test_mse", "mse_drop")
    assert acc.show(0.975) == "97.50" and mse.show(0.0123456) == "0.01235" and mse.show(float("nan")) == "n/a"


def test_a_callable_gets_the_outputs_as_the_model_returned_them():
    seen = []

    def f1ish(outputs, targets):
        seen.append(outputs)
        return 0.25

    m = resolve(f1ish, True)
    fields = {"logits": SCORES, "hidden": np.ones((4, 2))}
    assert m(fields, CLASSES, kind="dict") == 0.25 and seen[-1] is not fields and set(seen[-1]) == {"logits", "hidden"}
    m(fields, CLASSES, kind="tuple")
    assert isinstance(seen[-1], tuple) and seen[-1][1].shape == (4, 2)
    m({"logits": SCORES}, CLASSES, kind="tensor")
    assert seen[-1] is SCORES
    assert as_returned(fields, "tuple") == (SCORES, fields["hidden"])


@pytest.mark.parametrize("value, message", [
    (float("nan"), "metric 'm' returned nan"),
    (math.inf, "metric 'm' returned inf"),
    (np.array([1.0, 2.0]), "metric 'm' must return one number, got ndarray of shape (2,)"),
    ("0.9", "metric 'm' must return one number, got str"),
    (True, "metric 'm' must return one number, got bool"),
    (None, "metric 'm' must return one number, got NoneType"),
])
def test_what_is_not_one_finite_number_is_refused(value, message):
    with pytest.raises(ValueError) as info:
        checked("m", value)
    assert str(info.value) == message


def test_one_element_arrays_and_tensors_are_numbers():
    assert checked("m", np.array([0.5])) == 0.5 and checked("m", torch.tensor(0.25)) == 0.25 and checked("m", np.float32(2)) == 2.0


def test_resolve_names_the_field_and_the_value():
    with pytest.raises(ValueError, match=r"^Task.metric must be one of \['accuracy', 'top5', 'mse', 'mae'\] .* got 'f1'$"):
        resolve("f1")
    with pytest.raises(ValueError, match=r"^Task.metric must be one of .* got int$"):
        resolve(3)
    with pytest.raises(ValueError, match="may not be named like the built-in 'mse'"):
        def mse(o, t):
            return 0.0
        resolve(mse, False)
    assert resolve(lambda o, t: 0.0, False).name == "metric"
    assert resolve("mae") is BUILTIN["mae"] and resolve(BUILTIN["top5"]) is BUILTIN["top5"]


def test_a_metric_read_back_from_a_run_keeps_its_direction_but_cannot_compute():
    def f1(o, t):
        return 0.0

    m = Metric.described(resolve(f1, True).describe())
    assert (m.name, m.higher_is_better, m.percent) == ("f1", True, False)
    assert Metric.described(None) is BUILTIN["accuracy"] and Metric.described(BUILTIN["mse"].describe()) is BUILTIN["mse"]
    with pytest.raises(ValueError, match="read from a run's files"):
        m({"x": SCORES}, CLASSES)

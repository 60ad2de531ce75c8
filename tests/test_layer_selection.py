"""Layer-selection rules on constructed curves, and the convexity plot."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest

from harness.compression.convexity.plot import plot_convexity
from harness.compression.convexity.selection import choose_hidden_state, plateau_tolerance, select_layers

# Rises fast to 80 at hidden state 4, creeps to a peak of 81.5 at 7, then falls.
SLOW_PEAK = [10.0, 30.0, 55.0, 72.0, 80.0, 80.5, 81.0, 81.5, 75.0, 60.0, 50.0, 45.0, 40.0]


def test_peak_picks_the_maximum_first_on_ties():
    assert choose_hidden_state(SLOW_PEAK, "peak") == 7
    assert choose_hidden_state([1.0, 5.0, 5.0, 2.0], "peak") == 1


def test_plateau_stops_where_the_rest_rises_within_tolerance():
    # tolerance = max(1 point, 2 % of 81.5 = 1.63) = 1.63; after state 4 the curve rises by 1.5.
    assert plateau_tolerance(SLOW_PEAK) == pytest.approx(1.63)
    assert choose_hidden_state(SLOW_PEAK, "plateau") == 4
    # A tighter tolerance keeps going: after state 5 the rise is 1.0, after 6 it is 0.5.
    assert choose_hidden_state(SLOW_PEAK, "plateau", tolerance_points=0.9, tolerance_fraction=0.0) == 6
    assert choose_hidden_state(SLOW_PEAK, "plateau", tolerance_points=0.0, tolerance_fraction=0.0) == 7


def test_plateau_never_past_peak_and_steady_rise_keeps_everything():
    rng = np.random.default_rng(0)
    for _ in range(200):
        curve = list(rng.uniform(0, 100, size=rng.integers(1, 14)))
        assert choose_hidden_state(curve, "plateau") <= choose_hidden_state(curve, "peak")
    rising = [10.0 * i for i in range(8)]
    assert choose_hidden_state(rising, "plateau") == 7
    assert choose_hidden_state([50.0], "plateau") == 0


def test_select_layers_single_label_counts_layers_from_the_input_state():
    selection = select_layers({"word": SLOW_PEAK}, "peak")
    assert (selection.num_layers, selection.hidden_state, selection.decided_by) == (7, 7, "word")
    assert "peaks at hidden state 7" in selection.reason
    shifted = select_layers({"word": SLOW_PEAK}, "peak", includes_input_state=False)
    assert (shifted.num_layers, shifted.hidden_state) == (8, 7)
    plateau = select_layers({"word": SLOW_PEAK}, "plateau")
    assert plateau.num_layers == 4
    assert plateau.per_label["word"].tolerance == pytest.approx(1.63)
    assert "stops rising" in plateau.reason


def test_all_label_types_take_the_deepest_choice():
    speaker = [40.0, 70.0, 75.0, 70.0, 60.0, 50.0, 45.0, 40.0, 35.0, 30.0, 28.0, 25.0, 20.0]
    phone = [20.0, 30.0, 45.0, 60.0, 66.0, 67.0, 60.0, 55.0, 50.0, 45.0, 40.0, 35.0, 30.0]
    selection = select_layers({"speaker": speaker, "word": SLOW_PEAK, "phone": phone}, "peak")
    assert {name: c.hidden_state for name, c in selection.per_label.items()} == {"speaker": 2, "word": 7, "phone": 5}
    assert (selection.num_layers, selection.decided_by) == (7, "word")
    assert "deepest choice over 3 label types" in selection.reason
    json.dumps(selection.to_dict())  # recordable as is


def test_min_layers_floor():
    early = [90.0, 50.0, 40.0, 30.0]
    selection = select_layers({"speaker": early}, "peak", min_layers=2)
    assert (selection.num_layers, selection.hidden_state) == (2, 2)
    assert "raised to the minimum of 2 layers" in selection.reason
    assert select_layers({"speaker": early}, "peak", min_layers=0).num_layers == 0


@pytest.mark.parametrize(
    "curves, kwargs, message",
    [
        ({"word": SLOW_PEAK}, {"rule": "peek"}, "unknown layer-selection rule 'peek'"),
        ({}, {}, "at least one curve"),
        ({"word": [1.0, 2.0], "phone": [1.0]}, {}, "lengths differ"),
        ({"word": [1.0, float("nan")]}, {}, "NaN"),
        ({"word": [1.0, 2.0]}, {"min_layers": 5}, "exceeds"),
    ],
)
def test_bad_input_raises(curves, kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_layers(curves, **kwargs)


def test_plot_writes_a_png_with_kept_layers(tmp_path):
    speaker = [40.0, 70.0, 75.0, 70.0, 60.0, 50.0, 45.0, 40.0, 35.0, 30.0, 28.0, 25.0, 20.0]
    curves = {"word": SLOW_PEAK, "speaker": speaker}
    selection = select_layers(curves, "plateau")
    path = plot_convexity(curves, tmp_path / "plots" / "convexity.png", selection=selection)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0.01  # something was drawn
    assert list(tmp_path.joinpath("plots").iterdir()) == [path]  # no temporary file left behind
    plain = plot_convexity({"word": SLOW_PEAK}, tmp_path / "plain.png")
    assert plain.stat().st_size > 1000

"""Task shares over a run: ramps, start and end updates, stages, an annealed temperature;
values checked against the formulas written out here."""
import math

import numpy as np
import pytest

from ofasys_fairseq.data.sampling_schedule import Ramp, SamplingSchedule, Stage

NAMES = ["caption", "grounding", "vqa"]
SIZES = [400, 100, 25]


def schedule(sampling="weights", weights=(1, 1, 1), temperature=Ramp.constant(1.0),
             spans=((0, None),) * 3, stages=()):
    return SamplingSchedule(sampling, NAMES, SIZES,
                            [w if isinstance(w, Ramp) else Ramp.constant(w) for w in weights],
                            temperature, [None] * 3, spans, stages)


def test_a_ramp_is_linear_or_cosine_between_its_updates_and_constant_outside():
    linear, cosine = Ramp(2.0, 0.5, 100, 300), Ramp(2.0, 0.5, 100, 300, "cosine")
    for update, done in ((0, 0), (100, 0), (150, 0.25), (200, 0.5), (300, 1), (900, 1)):
        assert linear.at(update) == pytest.approx(2.0 - 1.5 * done)
        eased = (1 - math.cos(math.pi * done)) / 2
        assert cosine.at(update) == pytest.approx(2.0 - 1.5 * eased)
    assert cosine.at(150) > linear.at(150)  # cosine starts slowly


def test_a_weight_ramp_moves_the_shares():
    shares = schedule(weights=(Ramp(3.0, 1.0, 0, 1000), 1, 1))
    assert shares.at(0).tolist() == pytest.approx([0.6, 0.2, 0.2])
    assert shares.at(500).tolist() == pytest.approx([0.5, 0.25, 0.25])
    assert shares.at(5000).tolist() == pytest.approx([1 / 3] * 3)
    assert not shares.is_static and schedule().is_static


def test_start_and_end_updates_gate_a_task():
    shares = schedule(spans=((0, None), (0, 300), (200, None)))
    assert shares.at(0).tolist() == pytest.approx([0.5, 0.5, 0])
    assert shares.at(250).tolist() == pytest.approx([1 / 3] * 3)
    assert shares.at(300).tolist() == pytest.approx([0.5, 0, 0.5])  # end_update: exclusive


def test_stages_choose_the_tasks_and_their_factors():
    stages = [Stage("warmup", 300, {"grounding": 1.0}),
              Stage("joint", None, {"caption": 1.0, "grounding": 2.0, "vqa": 1.0})]
    shares = schedule(stages=stages)
    assert shares.at(0).tolist() == shares.at(299).tolist() == [0, 1, 0]
    assert shares.at(300).tolist() == pytest.approx([0.25, 0.5, 0.25])
    assert shares.stage_at(10 ** 6).name == "joint"


def test_an_annealed_temperature_flattens_size_sampling():
    shares = schedule(sampling="temperature", temperature=Ramp(1.0, 100.0, 0, 1000))
    sizes = np.array(SIZES, dtype=float)
    assert shares.at(0).tolist() == pytest.approx((sizes / sizes.sum()).tolist())
    flat = sizes ** (1 / 100)
    assert shares.at(1000).tolist() == pytest.approx((flat / flat.sum()).tolist())
    middle = sizes ** (1 / 50.5)
    assert shares.at(500).tolist() == pytest.approx((middle / middle.sum()).tolist())


def test_a_schedule_with_an_update_that_trains_nothing_is_refused():
    gap = schedule(spans=((0, 100), (0, 100), (200, None)))
    with pytest.raises(ValueError, match="from update 100 no task would be trained"):
        gap.check()
    with pytest.raises(ValueError, match="no task is trained at update 150"):
        gap.at(150)
    schedule(spans=((0, 100), (0, 100), (100, None))).check()  # back to back: fine

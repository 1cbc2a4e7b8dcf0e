"""The multitask sampler: ``task_probabilities`` (each strategy is its formula) and
``draw_task`` (a pure function of (seed, update, slot) whose draws follow the
probabilities)."""
import numpy as np
import pytest
from scipy import stats

from ofasys_fairseq.data.task_sampler import SAMPLING, draw_task, task_probabilities

SIZES = [10, 40, 250, 1000]
WEIGHTS = [1.0, 0.5, 3.0, 0.0]


def test_uniform_is_one_over_the_number_of_tasks():
    p = task_probabilities("uniform", SIZES, WEIGHTS)
    assert p.tolist() == pytest.approx([0.25] * 4, abs=1e-15)
    # sizes and weights play no part
    assert task_probabilities("uniform", [1, 2, 3], [0.0, 9.0, 1.0]).tolist() == \
        pytest.approx([1 / 3] * 3, abs=1e-15)


def test_size_is_proportional_to_the_sizes():
    p = task_probabilities("size", SIZES, WEIGHTS)
    total = sum(SIZES)
    assert p.tolist() == pytest.approx([n / total for n in SIZES], abs=1e-15)


@pytest.mark.parametrize("temperature", [0.5, 2.0, 3.0, 10.0])
def test_temperature_is_size_to_the_one_over_t(temperature):
    p = task_probabilities("temperature", SIZES, WEIGHTS, temperature=temperature)
    raw = [n ** (1.0 / temperature) for n in SIZES]
    assert p.tolist() == pytest.approx([r / sum(raw) for r in raw], rel=1e-12)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_temperature_one_is_size_and_large_temperatures_approach_uniform():
    size = task_probabilities("size", SIZES, WEIGHTS)
    assert task_probabilities("temperature", SIZES, WEIGHTS, 1.0).tolist() == \
        pytest.approx(size.tolist(), rel=1e-12)
    # flatter and flatter as T grows: the distance to uniform shrinks monotonically
    distances = [np.abs(task_probabilities("temperature", SIZES, WEIGHTS, t) - 0.25).max()
                 for t in (1.0, 2.0, 5.0, 50.0, 1e4)]
    assert all(a > b for a, b in zip(distances, distances[1:]))
    assert distances[-1] < 1e-3
    # T < 1 sharpens towards the largest task
    assert task_probabilities("temperature", SIZES, WEIGHTS, 0.25)[-1] > size[-1]


def test_weights_are_normalized():
    p = task_probabilities("weights", SIZES, WEIGHTS)
    assert p.tolist() == pytest.approx([w / sum(WEIGHTS) for w in WEIGHTS], abs=1e-15)
    assert p[-1] == 0.0  # a task of weight 0 is never drawn


def test_size_caps_apply_to_size_and_temperature_only():
    caps = [None, 30, 100, 100]
    capped = [10, 30, 100, 100]
    p = task_probabilities("size", SIZES, WEIGHTS, size_caps=caps)
    assert p.tolist() == pytest.approx([n / sum(capped) for n in capped], abs=1e-15)
    raw = [n ** 0.5 for n in capped]
    p = task_probabilities("temperature", SIZES, WEIGHTS, temperature=2.0, size_caps=caps)
    assert p.tolist() == pytest.approx([r / sum(raw) for r in raw], rel=1e-12)
    # a cap above the size changes nothing
    assert task_probabilities("size", SIZES, WEIGHTS, size_caps=[10 ** 6] * 4).tolist() == \
        pytest.approx(task_probabilities("size", SIZES, WEIGHTS).tolist(), abs=1e-15)
    # uniform / weights ignore sizes, capped or not
    assert task_probabilities("weights", SIZES, WEIGHTS, size_caps=caps).tolist() == \
        pytest.approx([w / sum(WEIGHTS) for w in WEIGHTS], abs=1e-15)


def test_unknown_strategy_names_the_known_ones():
    with pytest.raises(ValueError) as info:
        task_probabilities("proportional", SIZES, WEIGHTS)
    message = str(info.value)
    assert "unknown sampling 'proportional'" in message
    for name in SAMPLING:
        assert name in message


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match=r"temperature must be > 0, got " + str(temperature)):
        task_probabilities("temperature", SIZES, WEIGHTS, temperature=temperature)


def test_all_zero_weights_is_an_error():
    with pytest.raises(ValueError, match="weights sampling gives every task weight 0"):
        task_probabilities("weights", SIZES, [0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="size sampling gives every task weight 0"):
        task_probabilities("size", [0, 0], [1.0, 1.0])


# --- draw_task ------------------------------------------------------------------------------


P = np.array([0.5, 0.3, 0.15, 0.05])


def draws(seed, updates=5000, slots=4, p=P):
    return np.array([draw_task(p, seed, u, s) for u in range(updates) for s in range(slots)])


def test_draw_task_is_a_pure_function():
    keys = [(1, 0, 0), (1, 7, 3), (5, 123, 0), (1, 7, 3), (2 ** 31, 10 ** 6, 15)]
    first = [draw_task(P, *key) for key in keys]
    # in another order, after unrelated draws (no hidden state)
    np.random.seed(0)
    again = [draw_task(P, *key) for key in reversed(keys)][::-1]
    assert first == again
    assert first[1] == first[3]
    assert all(0 <= t < len(P) for t in first)


def test_draw_task_frequencies_follow_the_probabilities():
    sample = draws(seed=1)  # 20000 draws: 5000 updates x 4 slots
    counts = np.bincount(sample, minlength=len(P))
    assert counts.sum() == 20000
    # chi-square goodness of fit, 3 degrees of freedom; the chi2 table's 0.999 quantile for
    # df = 3 is 16.266: a correct sampler fails this with probability 0.001
    statistic, p_value = stats.chisquare(counts, P * counts.sum())
    assert statistic == pytest.approx(((counts - P * 20000) ** 2 / (P * 20000)).sum())
    assert statistic < 16.266 and p_value > 1e-3, (counts, statistic)
    # and every frequency within 1.5 percentage points
    assert np.abs(counts / counts.sum() - P).max() < 0.015
    # each slot on its own follows them too (slots are not, say, all the same task)
    for slot in range(4):
        freq = np.bincount(sample[slot::4], minlength=len(P)) / 5000
        assert np.abs(freq - P).max() < 0.03


def test_draw_task_never_draws_a_task_of_probability_zero():
    p = np.array([0.0, 0.7, 0.0, 0.3])
    assert set(draws(seed=3, updates=500, p=p).tolist()) == {1, 3}


def test_seeds_give_different_sequences():
    a, b = draws(seed=1, updates=250), draws(seed=2, updates=250)
    assert not np.array_equal(a, b)
    # independent sequences agree about as often as two independent draws do
    agreement = (a == b).mean()
    assert abs(agreement - (P ** 2).sum()) < 0.05
    # and update / slot matter as well: not one draw per seed
    assert len(set(a.tolist())) == len(P)
    assert not np.array_equal(a[0::4], a[1::4])

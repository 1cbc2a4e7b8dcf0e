"""AUDIO features: filterbank shapes, statistics fitted once on the training split and
carried by the checkpoint, and SpecAugment drawn from the item's seed."""
import numpy as np
import pytest
import soundfile
import torch

from ofasys_fairseq.data.table import Table
from ofasys_fairseq.modalities.audio.features import (MEL_BINS, FeatureStatistics,
                                                      filterbanks, frame_moments, num_frames,
                                                      spec_augment)

from tests.helpers import instruction_task, write_jsonl

INSTRUCTION = "[AUDIO:wav,preprocess=specaugment] what is said ? -> [TEXT:text]"


def chirp(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * seed) * t * (1 + t))
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def sounds(tmp_path):
    """Training and validation rows of sounds of different lengths and pitches."""
    (tmp_path / "wavs").mkdir()
    rows = {"train": [], "valid": []}
    for i in range(12):
        split = "train" if i < 9 else "valid"
        soundfile.write(tmp_path / "wavs" / f"{i}.wav", chirp(0.3 + 0.1 * i, i), 16000)
        rows[split].append({"wav": f"wavs/{i}.wav", "text": f"sound {i}"})
    for split, split_rows in rows.items():
        write_jsonl(tmp_path / f"{split}.jsonl", split_rows)
    return tmp_path


@pytest.mark.parametrize("samples", [400, 559, 560, 16000, 16001])
def test_filterbank_frames(samples):
    features = filterbanks(torch.from_numpy(chirp(1.1, 0))[:samples])
    assert features.shape == (num_frames(samples), MEL_BINS)


def test_statistics_are_the_mean_and_deviation_of_every_frame():
    features = [filterbanks(torch.from_numpy(chirp(s, i))) for i, s in enumerate((0.3, 0.7))]
    statistics = FeatureStatistics.of(sum(frame_moments(f) for f in features))
    frames = torch.cat(features).double()
    torch.testing.assert_close(torch.tensor(statistics.mean, dtype=torch.float64), frames.mean(0))
    torch.testing.assert_close(torch.tensor(statistics.std, dtype=torch.float64),
                               frames.std(0, unbiased=False))


def test_statistics_are_fitted_on_training_and_travel_in_the_task_state(sounds):
    task = instruction_task(sounds, INSTRUCTION)
    task.prepare()
    state = task.state_dict()
    fitted = state["modalities"]["AUDIO"]["statistics"]
    assert len(fitted["mean"]) == len(fitted["std"]) == MEL_BINS
    # training features are normalized to zero mean and unit deviation
    dataset = task.dataset_for(*_split(task, sounds, "train"), with_target=True)
    frames = torch.cat([dataset[i].features[0].values for i in range(len(dataset))])
    assert frames.mean().abs() < 1e-3 and abs(frames.std() - 1) < 0.05

    # a task set up from the checkpoint normalizes validation rows identically,
    # without reading the training split
    restored = instruction_task(sounds / "elsewhere", INSTRUCTION)
    restored.load_state_dict(state)
    assert restored.modality_settings["AUDIO"]["statistics"] == fitted
    original = task.dataset_for(*_split(task, sounds, "valid"), with_target=True)
    again = restored.dataset_for(*_split(restored, sounds, "valid"), with_target=True)
    torch.testing.assert_close(again[0].features[0].values, original[0].features[0].values)


def test_a_seeded_sample_of_the_training_sounds(sounds):
    def fitted(**options):
        task = instruction_task(sounds, INSTRUCTION, **options)
        task.prepare()
        return task.modality_settings["AUDIO"]["statistics"]

    assert fitted(audio_stats_utterances=3) == fitted(audio_stats_utterances=3)
    assert fitted(audio_stats_utterances=3) != fitted(audio_stats_utterances=0)  # 0: all
    assert fitted(audio_stats_utterances=9) == fitted(audio_stats_utterances=0)


def test_spec_augment_is_drawn_from_the_seed():
    features = torch.randn(300, MEL_BINS)
    first, again, other = (spec_augment(features, seed) for seed in (5, 5, 6))
    assert torch.equal(first, again) and not torch.equal(first, other)
    masked = first == 0
    assert masked.any()
    assert torch.equal(first[~masked], features[~masked])  # the rest is untouched
    # whole bands and whole spans
    bands, spans = masked.all(0), masked.all(1)
    assert bands.any() and spans.any()
    assert masked.equal(bands[None, :] | spans[:, None])


def test_spec_augment_only_in_training(sounds):
    task = instruction_task(sounds, INSTRUCTION)
    task.prepare()
    training = task.dataset_for(*_split(task, sounds, "train"), with_target=True, train=True)
    evaluation = task.dataset_for(*_split(task, sounds, "train"), with_target=True)
    augmented, plain = training[3].features[0].values, evaluation[3].features[0].values
    assert (augmented == 0).sum() > (plain == 0).sum()
    training.set_epoch(2)
    assert not torch.equal(training[3].features[0].values, augmented)  # new masks each epoch


def _split(task, root, split):
    table = Table(str(root / f"{split}.jsonl"))
    return table, task.bind_plan(table)


def test_a_model_not_trained_on_sounds_refuses_them(sounds):
    """A checkpoint's settings without AUDIO statistics (a text model) cannot serve an
    instruction with sounds: said when the model is built, not at the first row."""
    task = instruction_task(sounds, INSTRUCTION)
    task.use_checkpoint_settings({"AUDIO": {"stats_utterances": 1000, "statistics": None}})
    with pytest.raises(ValueError, match=r"this model was not trained on AUDIO slots like "
                                         r"\[AUDIO:wav,preprocess=specaugment\]"):
        task.plan_modalities()

"""The demos' report (``scripts/demo.py``): every configured task has data, ratios read
error rates and distances the right way round, spectrogram pictures show loudness."""
import math
import os

import demo  # scripts/ is on the path
import demo_speech
import numpy as np
import pytest
import torch
from PIL import Image

from ofasys_fairseq.instruction import Instruction


@pytest.mark.parametrize("config", demo.CONFIGS)
def test_every_task_of_a_demo_config_has_a_data_writer_and_parses(config):
    for name, spec in demo.demo_tasks(config).items():
        assert os.path.basename(spec["data"]) in demo.DATA_WRITERS, name
        assert Instruction.parse(spec["instruction"]).slots, name
        assert spec["metrics"][0] in demo.SCORERS, name


def test_the_speech_demo_trains_the_documented_instructions():
    tasks = demo.demo_tasks("speech_demo")
    assert tasks["speech_recognition"]["instruction"] == demo_speech.ASR_INSTRUCTION
    assert tasks["text_to_speech"]["instruction"] == demo_speech.TTS_INSTRUCTION


@pytest.mark.parametrize("metric, generalist, specialist, ratio", [
    ("accuracy", 45.0, 90.0, 0.5),  # higher is better
    ("wer", 40.0, 20.0, 0.5),  # twice the specialist's errors keeps half its quality
    ("mcd", 6.0, 4.0, 4.0 / 6.0),
])
def test_quality_ratio(metric, generalist, specialist, ratio):
    assert demo.quality_ratio(metric, generalist, specialist) == pytest.approx(ratio)


def test_quality_ratio_of_a_zero_specialist_is_undefined():
    assert math.isnan(demo.quality_ratio("accuracy", 10.0, 0.0))


def test_spectrogram_picture_puts_the_reference_above_and_darkens_loud_bins(tmp_path):
    quiet = torch.full((20, 80), -10.0)
    reference = quiet.clone()
    reference[5, 0] = 2.0  # one loud low bin
    generated = quiet[:12].clone()
    generated[3, 79] = 2.0  # one loud high bin, in a shorter sound
    path = demo.draw_spectrograms(generated, reference, str(tmp_path / "s.png"), scale=1)
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (80 + 4 + 80, 20)
    assert pixels[79, 5] == 0 and pixels[:80].sum() == 255 * (80 * 20 - 1)  # low bin: bottom
    assert pixels[84, 3] == 0  # high bin: top of the lower picture
    assert (pixels[84:, 12:] == 255).all()  # the shorter sound is padded white


def test_trained_batches_count_each_tasks_samples_in_its_own_batch_size():
    epoch = ("[2026-12-03 06:00:00,000][train][INFO] - epoch {} | loss 2.1 | text_samples 320 "
             "| speech_samples 160 | num_updates {}")
    log = "\n".join([epoch.format(1, 20), "an unrelated line", epoch.format(2, 40)])
    tasks = {"text": {}, "speech": {"batch_size": 16}}
    assert demo.trained_batches(log, tasks, batch_size=32) == {"text": 20, "speech": 20}


def test_the_console_gets_one_short_line_per_epoch_and_validation():
    """fairseq's lines as fairseq-hydra-train logs them; the full ones stay in the log."""
    epoch = ("[2026-12-03 08:30:28,491][train][INFO] - epoch 003 | loss 9.378 | nll_loss 9.307 "
             "| nli_loss 1.2 | nli_tokens 11148 | wps 781 | ups 2.14 | wpb 364.9 | bsz 23.5 | "
             "num_updates 168 | lr 0.00084 | gnorm 3.178 | train_wall 25 | wall 80")
    valid = ("[2026-12-03 08:30:28,380][valid][INFO] - epoch 003 | valid on 'valid' subset | "
             "loss 7.847 | nll_loss 7.738 | nli_loss 9.191 | nli_accuracy 61.5 | score 61.5 | "
             "wps 3000 | wpb 400 | bsz 60 | num_updates 168 | best_score 61.5")
    inner = ("[2026-12-03 08:30:20,000][train_inner][INFO] - epoch 003:  50 / 56 loss=9.4, "
             "num_updates=150")
    assert demo.progress_line(epoch) == "epoch 003: 168 updates, loss 9.38, 2.1 updates/s"
    assert demo.progress_line(valid) == "validation after 168 updates: score 61.50"
    assert demo.progress_line(inner) is None and demo.progress_line("loading data") is None
    # Hydra's warning about the demo config's header, a line a number ends
    assert demo.progress_line("This behavior is deprecated in Hydra 1.1 and will be removed "
                              "in Hydra 1.2.") is None
    assert demo.log_fields("removed in Hydra 1.2.") == {}


@pytest.mark.parametrize("config", demo.CONFIGS)
def test_a_specialist_trains_its_task_alone_without_stages(config, monkeypatch):
    from fairseq import tasks as fairseq_tasks
    from fairseq.dataclass.initialize import hydra_init
    from hydra import compose, initialize_config_dir

    monkeypatch.setattr(demo, "CONFIG_NAME", config)
    tasks = demo.demo_tasks()
    name, first = list(tasks)[-1], list(tasks)[0]
    # the run's stages, given on the command line as a user gives them
    monkeypatch.setattr(demo, "EXTRA_OVERRIDES", [
        f"++task.stages={{a:{{until:10,tasks:[{first}]}},b:{{tasks:[{first},{name}]}}}}"])
    overrides = demo.with_extra_overrides(demo.specialist_overrides(name, tasks))
    hydra_init(config)
    with initialize_config_dir(config_dir=demo.CONFIG_DIR, version_base="1.1"):
        cfg = compose(config_name=config, overrides=overrides)
    assert cfg.task.stages is None
    # accepted as the run's batch mode has it (stages and weights mean nothing alone)
    assert fairseq_tasks.setup_task(cfg.task).task_names == [name]

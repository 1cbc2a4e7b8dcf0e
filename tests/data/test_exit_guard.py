"""Training that stops in the middle of an epoch exits cleanly while fairseq's prefetching
thread is building the next batch of sounds (``data/exit_guard.py``): without the guard
Python 3.11 ended the thread inside a torch op and the process aborted (exit 134,
"terminate called without an active exception") after training had finished."""
import subprocess

import demo_speech  # scripts/ is on the path

from tests.helpers import ONE_THREAD, tiny_train_command


def test_training_stopped_mid_epoch_exits_cleanly_while_sounds_are_prefetched(tmp_path):
    # 30 batches: fairseq's buffer (10 batches) is still being filled when training stops
    data = demo_speech.write_digits_task(str(tmp_path), train=240, valid=4)
    command = tiny_train_command(data, tmp_path / "checkpoints", demo_speech.ASR_INSTRUCTION,
                                 "--batch-size", "8", "--max-update", "2",
                                 "--disable-validation", "--no-save")
    # without the guard it aborted every time
    result = subprocess.run(command, env=ONE_THREAD, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "done training" in output and "terminate called" not in output

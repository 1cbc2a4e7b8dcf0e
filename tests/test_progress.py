"""Progress on screen: fairseq-train and fairseq-generate draw a progress bar (updates/s,
loss, time left) on a terminal, and write plain log lines when their output is a file or a
pipe (CI, slurm logs)."""
import fcntl
import os
import pty
import random
import re
import struct
import subprocess
import sys
import termios

import pytest

from tests.test_end_to_end import (MODEL_ARGS, USER_DIR, fairseq, word_for_word_example,
                                   write_rows)

pytestmark = pytest.mark.slow

INSTRUCTION = "translate word for word: [TEXT:en] -> [TEXT:toy]"
# a bar: "epoch 001:  40%|####      | 12/30 [00:01<00:01, 24.3it/s, loss=3.1, ...]"
BAR = re.compile(r"epoch 001: +\d+%\|[^|]*\| *\d+/(\d+) \[\d\d:\d\d<\d\d:\d\d, +[\d.]+it/s")


def on_a_terminal(command, columns: int = 160, lines: int = 40) -> str:
    """Run ``command`` on a pseudo-terminal of the given size; its screen output (a pty
    without a size is 0 columns wide, and tqdm draws nothing there)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    process = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 1 << 16)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=600) == 0, b"".join(chunks)[-4000:]
    return b"".join(chunks).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    rng = random.Random(1)
    write_rows(root / "train.jsonl", [word_for_word_example(rng) for _ in range(240)])
    write_rows(root / "valid.jsonl", [word_for_word_example(rng) for _ in range(40)])
    return root


def train_command(data, save_dir, *extra):
    args = [a for a in MODEL_ARGS if a not in ("--log-format", "simple")]  # fairseq's default
    return [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", USER_DIR,
            "--instruction", INSTRUCTION, *args, "--max-epoch", "1", "--batch-size", "8",
            "--save-dir", str(save_dir), *extra]


def test_training_and_generation_draw_a_progress_bar_on_a_terminal(data, tmp_path):
    screen = on_a_terminal(train_command(data, tmp_path))
    bars = BAR.findall(screen)
    assert bars and set(bars) == {"30"}, screen[-3000:]  # 240 rows / 8 a batch
    assert re.search(r"it/s, loss=[\d.]+, nll_loss=[\d.]+", screen)  # fairseq's postfix
    assert "train_inner" not in screen  # the bar replaces the per-interval lines

    screen = on_a_terminal([sys.executable, "-m", "fairseq_cli.generate", str(data),
                            "--user-dir", USER_DIR, "--task", "instruction", "--path",
                            str(tmp_path / "checkpoint_last.pt"),
                            "--gen-subset", "valid", "--batch-size", "4", "--beam", "2", "--cpu"])
    assert re.search(r"\d+%\|[^|]*\| *\d+/10 \[\d\d:\d\d<\d\d:\d\d", screen), screen[-3000:]
    assert re.search(r"^H-\d+\t", screen, re.M)


def test_plain_lines_when_the_output_is_not_a_terminal(data, tmp_path):
    log = fairseq("train", *train_command(data, tmp_path)[3:])
    assert not BAR.search(log) and "%|" not in log
    assert re.search(r"train_inner \| epoch 001: +10 / 30 loss=[\d.]+", log)

"""Text-to-speech through fairseq's tools: a model learns to read digit strings aloud in
one eSpeak NG voice (validation: strings training never reads): its sounds match their
own texts better than other rows' (the distortion falls), it stops by itself near the
reference's length, and ``fairseq-generate`` writes one wav per row (and its reference)
to ``--results-path``, printing their paths, with ``--scoring mcd`` equal to validation's
distortion; ``OFASys.inference`` returns the sound and its sample rate, through the
vocoder the caller names."""
import argparse
import json
import re
import statistics

import demo_speech  # the demo's speech data (scripts/ is on the path)
import pytest
import soundfile
import torch

from tests.test_end_to_end import USER_DIR, fairseq, valid_metrics

from ofasys_fairseq import OFASys
from ofasys_fairseq.modalities.audio.mcd import mcd_stats, read_sound
from ofasys_fairseq.modalities.audio.vocoder import VOCODERS, Vocoder, register_vocoder

pytestmark = pytest.mark.slow

INSTRUCTION = "[TEXT:text] read it aloud -> [AUDIO:wav,frames_per_step=8]"
ARGS = ["--user-dir", USER_DIR, "--task", "instruction", "--arch", "ofasys_tiny",
        "--embed-dim", "64", "--ffn-embed-dim", "128", "--attention-heads", "4",
        "--encoder-layers", "2", "--decoder-layers", "2", "--dropout", "0.0",
        "--criterion", "instruction_ce", "--frame-stop-weight", "5", "--optimizer", "adam",
        "--lr", "0.003", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "30",
        "--batch-size", "8", "--vocab-size", "40", "--cpu", "--seed", "1",
        "--num-workers", "0", "--log-format", "simple", "--log-interval", "20",
        "--no-epoch-checkpoints", "--best-checkpoint-metric", "mcd", "--validate-interval", "5",
        # 20 steps of 8 frames: 2 s, longer than any reference (an untrained model's
        # babble is cut there)
        "--eval-max-len", "20"]


def mcd(generated, references) -> float:
    stats = mcd_stats(generated, references)
    return stats["_mcd_distance"] / stats["_mcd_frames"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tts")
    data = demo_speech.write_digits_tts_task(str(root), train=240, valid=20, longest=3)
    log = fairseq("train", data, *ARGS, "--instruction", INSTRUCTION,
                  "--max-epoch", "25", "--save-dir", str(root / "ck"))
    return {"data": data, "root": root, "log": log,
            "checkpoint": str(root / "ck" / "checkpoint_best.pt")}


def test_speech_learns_what_each_text_sounds_like_and_when_to_stop(trained):
    assert "AUDIO statistics fitted on 240 training cells" in trained["log"]
    losses = [float(m["loss"]) for m in valid_metrics(trained["log"])]
    assert losses[-1] < 0.7 * losses[0], losses  # epochs 5 to 25: 5.5 -> 3.4 in our runs

    rows = [json.loads(line) for line in open(f"{trained['data']}/valid.jsonl")]
    references = [read_sound(f"{trained['data']}/{row['wav']}") for row in rows]
    model = OFASys.from_pretrained(trained["checkpoint"])
    outputs = model.inference(data=[{"text": row["text"]} for row in rows])
    sounds = [output["wav"] for output in outputs]
    for sound in sounds:
        assert sound.sample_rate == 16000 and sound.waveform.dim() == 1
        assert sound.log_mel.shape[1] == 80
    # each sound is closer to its own text's recording than to the next row's (the same
    # voice saying other digits): 7.7 against 9.6 in our runs
    generated = [sound.waveform for sound in sounds]
    assert mcd(generated, references) < mcd(generated, references[1:] + references[:1]) - 0.5
    ratios = [g.numel() / r.numel() for g, r in zip(generated, references)]
    # the stop flag ends each row near its reference's length (median 1.15 in our runs;
    # an unstopped row runs 16 s, the decoder's positions)
    assert 0.7 < statistics.median(ratios) < 1.4, ratios
    assert sum(0.5 < r < 2 for r in ratios) >= 0.8 * len(ratios), ratios
    # the pre-net's dropout in generation is seeded: the same rows, the same sounds
    again = model.inference(data=[{"text": row["text"]} for row in rows])
    assert all(a["wav"].waveform.equal(g) for a, g in zip(again, generated))


class Beeps(Vocoder):
    """A vocoder of the test's own: a 440 Hz tone per frame, at 8 kHz."""

    sample_rate = 8000

    def __call__(self, log_mel):
        time = torch.arange(len(log_mel) * 100) / self.sample_rate
        return torch.sin(2 * torch.pi * 440 * time)


def test_the_caller_chooses_the_vocoder(trained):
    if "test_beeps" not in VOCODERS:
        register_vocoder("test_beeps", Beeps)
    model = OFASys.from_pretrained(trained["checkpoint"], audio_vocoder="test_beeps")
    sound = model.inference(data=[{"text": "one two"}])[0]["wav"]
    assert sound.sample_rate == 8000 and sound.waveform.numel() == 100 * len(sound.log_mel)


def test_generate_writes_one_wav_per_row_and_scores_them_as_validation(trained):
    metrics = valid_metrics(trained["log"])
    # checkpoint_best: fairseq keeps the last of equal scores
    best = min(reversed(metrics), key=lambda m: float(m["mcd"]))
    results = trained["root"] / "results"
    out = fairseq("generate", trained["data"], "--user-dir", USER_DIR, "--task", "instruction",
                  "--path", trained["checkpoint"], "--gen-subset", "valid", "--cpu",
                  "--batch-size", "8", "--max-len-b", "20",  # as validation decodes
                  "--scoring", "mcd", "--results-path", str(results))
    printed = (results / "generate-valid.txt").read_text()
    score = float(re.search(r"MCD: ([\d.]+)", printed).group(1))
    assert score == pytest.approx(float(best["mcd"]), abs=0.01)
    generated = dict(re.findall(r"^D-(\d+)\t\S+\t(.*)$", printed, re.M))
    references = dict(re.findall(r"^T-(\d+)\t(.*)$", printed, re.M))
    assert sorted(generated, key=int) == [str(i) for i in range(20)]
    for row, path in generated.items():
        assert path == str(results / "valid" / f"{row}.wav")
        assert soundfile.info(path).samplerate == 16000
        assert references[row] == str(results / "valid" / f"{row}.reference.wav")
    assert f"row 0: {results / 'valid' / '0.wav'}" in out  # also in the log


def test_generate_without_a_results_path_says_where_the_files_would_go(trained):
    model = OFASys.from_pretrained(trained["checkpoint"])  # no fairseq-generate options
    with pytest.raises(ValueError, match=r"\[AUDIO:wav,frames_per_step=8\] is a continuous "
                                         r"output .* give it --results-path DIR"):
        model.task.build_generator([model.model], argparse.Namespace(max_len_b=20))

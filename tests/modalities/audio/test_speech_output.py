"""AUDIO as a target: mel frames that the Griffin-Lim vocoder turns back into the
recording, the target's frames per step and normalization, and mel-cepstral distortion
against a dynamic time warping computed here by hand."""
import math

import pytest
import soundfile
import torch
import torchaudio

from ofasys_fairseq.instruction import Instruction
from ofasys_fairseq.modalities import Context, get_modality
from ofasys_fairseq.modalities.audio.mcd import McdScorer, mcd_stats
from ofasys_fairseq.modalities.audio.mel import HOP, log_mel, mel_frames
from ofasys_fairseq.modalities.audio.vocoder import (GriffinLimVocoder, Vocoder, get_vocoder,
                                                     register_vocoder)
from ofasys_fairseq.scoring.validation_metrics import selection_value
from tests.modalities.audio.test_arctic import ARCTIC, rows  # noqa: F401  (fixture)


def arctic_waveforms(rows):  # noqa: F811
    audio = get_modality("AUDIO")
    slot = Instruction.parse("[TEXT:text] -> [AUDIO:wav]").slots[1]
    return [audio.read(row["wav"], slot, Context(None, {}, base_dir=ARCTIC)).waveform
            for row in rows]


def test_griffin_lim_turns_the_mel_frames_back_into_the_recording(rows):  # noqa: F811
    first, second = arctic_waveforms(rows)
    frames = log_mel(first)
    assert frames.shape == (mel_frames(first.numel()), 80)
    sound = get_vocoder("griffin_lim")(frames)
    assert abs(sound.numel() - first.numel()) < HOP
    assert torch.equal(sound, get_vocoder("griffin_lim")(frames))  # no random phases
    resynthesized = mcd_stats([sound], [first])
    unrelated = mcd_stats([second], [first])
    mcd = resynthesized["_mcd_distance"] / resynthesized["_mcd_frames"]
    # 0.62 and 6.99 in our runs
    assert mcd < 1.5 < 5 < unrelated["_mcd_distance"] / unrelated["_mcd_frames"]


def hand_dtw_distance(x, y):
    """Classic dynamic time warping: the cheapest monotone path from (0, 0) to the end,
    each step right, down or diagonal, paying the root mean square difference of the
    coefficients of the frames it visits."""
    m, n = len(x), len(y)
    cost = [[math.inf] * (n + 1) for _ in range(m + 1)]
    cost[0][0] = 0.0
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            distance = math.sqrt(sum((a - b) ** 2 for a, b in zip(x[i - 1], y[j - 1]))
                                 / len(x[i - 1]))
            cost[i][j] = distance + min(cost[i - 1][j], cost[i][j - 1], cost[i - 1][j - 1])
    return cost[m][n]


def test_mel_cepstral_distortion_is_the_dtw_path_cost_of_the_mfccs_per_reference_frame():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(16000 // 5, generator=generator) * 0.1  # 0.2 s
    generated = torch.randn(16000 // 4, generator=generator) * 0.1
    mfcc = torchaudio.transforms.MFCC(16000, n_mfcc=13, log_mels=True, melkwargs={
        "n_fft": 800, "win_length": 800, "hop_length": 200, "f_min": 20, "n_mels": 80,
        "window_fn": torch.hann_window})
    x, y = mfcc(reference).t().tolist(), mfcc(generated).t().tolist()
    stats = mcd_stats([generated], [reference])
    assert stats["_mcd_frames"] == len(x)
    assert stats["_mcd_distance"] == pytest.approx(hand_dtw_distance(x, y), rel=1e-4)


def test_the_mcd_scorer_reads_the_two_sound_files(tmp_path, rows):  # noqa: F811
    first, second = arctic_waveforms(rows)
    soundfile.write(tmp_path / "ref.wav", first.numpy(), 16000)
    soundfile.write(tmp_path / "gen.flac", second.numpy(), 16000)
    scorer = McdScorer(None)
    scorer.add_string(f"{tmp_path}/ref.wav", f"{tmp_path}/gen.flac")
    stats = mcd_stats([second], [first])
    assert scorer.score() == pytest.approx(stats["_mcd_distance"] / stats["_mcd_frames"],
                                           rel=1e-4)
    assert scorer.result_string().startswith("MCD: ")


def test_a_distortion_counts_in_the_selection_score_down_to_zero_at_ten():
    assert selection_value("mcd", 2.5) == 75.0
    assert selection_value("mcd", 14.0) == 0.0
    assert selection_value("wer", 30.0) == 70.0  # an error rate: its complement


class Silence(Vocoder):
    sample_rate = 8000

    def __call__(self, log_mel):
        return torch.zeros(len(log_mel) * 100)


def test_a_users_vocoder_is_found_by_name_and_an_unknown_one_is_refused():
    register_vocoder("test_silence", Silence)
    assert isinstance(get_vocoder("test_silence"), Silence)
    assert isinstance(get_vocoder("griffin_lim"), GriffinLimVocoder)
    with pytest.raises(ValueError, match="unknown vocoder 'hifigan'.*griffin_lim"):
        get_vocoder("hifigan")
    with pytest.raises(ValueError, match="already registered"):
        register_vocoder("test_silence", Silence)


def test_the_target_is_normalized_mel_frames_grouped_by_step_and_postprocessed_back(rows):  # noqa: F811
    audio = get_modality("AUDIO")
    waveform = arctic_waveforms(rows)[1]
    frames = log_mel(waveform)
    settings = audio.fit({"vocoder": "griffin_lim", "statistics": None,
                          "target_statistics": None},
                         [("target_statistics", torch.cat([
                             torch.tensor([float(len(frames))]), frames.double().sum(0),
                             frames.double().pow(2).sum(0)]))])
    slot = Instruction.parse("[TEXT:text] -> [AUDIO:wav,frames_per_step=3]").slots[1]
    ctx = Context(None, {**settings, "frames_per_step": 3}, base_dir=ARCTIC)
    segment = audio.read(rows[1]["wav"], slot, ctx)
    target = audio.target(segment, slot, ctx, None).values
    assert target.shape == (math.ceil(len(frames) / 3), 240)
    assert audio.target_length(segment, slot, ctx) == len(target)
    assert target.reshape(-1, 80)[:len(frames)].mean(0).abs().max() < 1e-3  # normalized
    sound = audio.postprocess(target, slot, ctx, None)
    assert sound.sample_rate == 16000
    assert torch.allclose(sound.log_mel[:len(frames)], frames, atol=1e-3)
    assert torch.allclose(sound.log_mel[len(frames):], torch.tensor(math.log(1e-5)), atol=1e-3)

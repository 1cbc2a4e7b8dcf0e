"""Bad input fails before training, with messages that say what and where:
through ``InstructionTask.setup_task`` + ``load_dataset`` and through fairseq-train."""
import argparse
import json
import os
import subprocess
import sys

import pytest
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import ofasys_fairseq
from ofasys_fairseq.cli import choose_instruction_task, fairseq_tool
from ofasys_fairseq.data.table import DataError, InvalidRows
from ofasys_fairseq.instruction import InstructionError
from ofasys_fairseq.tasks.instruction_task import SentencepieceDetokenizer
from tests.helpers import ONE_THREAD, tiny_train_command

USER_DIR = os.path.dirname(os.path.abspath(ofasys_fairseq.__file__))
GOOD = "[TEXT:src] -> [TEXT:tgt]"
ROWS = [{"src": f"the cat sat on mat {i}", "tgt": ["yes", "no"][i % 2]} for i in range(12)]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def write_tsv(path, header, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        f.writelines("\t".join(str(r[c]) for c in header) + "\n" for r in rows)


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_jsonl(root / "train.jsonl", ROWS)
    write_jsonl(root / "valid.jsonl", ROWS[:4])
    return root


def parse_args(data_dir, instruction, *extra):
    """fairseq-train's arguments (same parser, architecture defaults included)."""
    parser = options.get_training_parser()
    return options.parse_args_and_arch(parser, [
        str(data_dir), "--task", "instruction", "--instruction", instruction,
        "--arch", "ofasys_tiny", "--vocab-size", "40", "--num-bins", "4", "--cpu",
        "--criterion", "instruction_ce",
        "--save-dir", str(os.path.join(data_dir, "..", "checkpoints")), *extra])


def setup_task(data_dir, instruction, *extra):
    """The task as fairseq-train sets it up (same parser, same config conversion)."""
    return tasks.setup_task(convert_namespace_to_omegaconf(
        parse_args(data_dir, instruction, *extra)).task)


# --- instruction problems: at set-up, before any data is read ----------------------------


@pytest.mark.parametrize("instruction, culprit, message", [
    ("[VIDEO:clip] -> [TEXT:cap]", "[VIDEO", "VIDEO slots are not supported yet"),
    ("[IMAGE:img,adaptor=clip] -> [TEXT:cap]", "adaptor", "IMAGE adaptor='clip' is unknown"),
    ("[TEXT:src] -> [TEXT:a] [TEXT:b]", "[TEXT:b]", "only one target slot"),
    ("[TEXT:src] -> [TEXT:tgt] thanks", "[TEXT:tgt]", "must end the instruction"),
    ("[TEXT:src,no_loss] -> [TEXT:tgt]", "no_loss", "'no_loss' does not apply to encoder slots"),
    ("[TEXT:src,closed_set] -> [TEXT:tgt]", "closed_set",
     "'closed_set' does not apply to encoder slots"),
    ("[TEXT:src,bogus] -> [TEXT:tgt]", "bogus", "unknown attribute 'bogus'"),
    ("[TEXT:src] -> [TEXT:tgt", "[TEXT:tgt", "is never closed"),
])
def test_bad_instructions_fail_at_setup_with_a_caret(tmp_path, instruction, culprit, message):
    missing_data = tmp_path / "no-such-dir"  # the plan is checked before the data is looked at
    with pytest.raises(InstructionError) as info:
        setup_task(missing_data, instruction)
    error = info.value
    assert message in error.message
    assert error.position == instruction.index(culprit)
    lines = str(error).split("\n")
    assert lines[1] == "  " + instruction
    assert lines[2] == "  " + " " * error.position + "^"


def test_a_good_instruction_sets_up_and_loads(data):
    task = setup_task(data, GOOD)
    assert task.plan.target.column == "tgt"
    task.load_dataset("train")
    task.load_dataset("valid")
    assert len(task.datasets["train"]) == len(ROWS)
    assert len(task.datasets["valid"]) == 4


# --- data problems: at load_dataset, naming the file ----------------------------------


def test_missing_column_in_a_tsv_lists_the_files_columns(tmp_path):
    root = tmp_path / "tsv"
    root.mkdir()
    write_tsv(root / "train.tsv", ["src", "tgt"], ROWS)
    task = setup_task(root, "[TEXT:source] -> [TEXT:tgt]")
    with pytest.raises(DataError) as info:
        task.load_dataset("train")
    message = str(info.value)
    assert info.value.path == str(root / "train.tsv")
    assert str(root / "train.tsv") in message
    assert "'source'" in message
    assert "the file's columns are: src, tgt" in message


def test_missing_column_in_jsonl_names_file_line_and_columns(data):
    task = setup_task(data, "[TEXT:source] -> [TEXT:tgt]")
    with pytest.raises(DataError) as info:
        task.load_dataset("train")
    message = str(info.value)
    assert str(data / "train.jsonl") in message
    assert info.value.line == 1 and info.value.column == "source"
    assert "missing column 'source'" in message and "src, tgt" in message


def test_missing_column_only_in_valid_names_the_valid_file(data):
    write_tsv(data / "valid.tsv", ["src", "target"],
              [{"src": r["src"], "target": r["tgt"]} for r in ROWS[:3]])
    os.remove(data / "valid.jsonl")
    task = setup_task(data, GOOD)
    task.load_dataset("train")
    with pytest.raises(DataError) as info:
        task.load_dataset("valid")
    assert info.value.path == str(data / "valid.tsv")
    assert "'tgt'" in str(info.value) and "src, target" in str(info.value)


def test_missing_split_file_lists_what_is_there(data):
    task = setup_task(data, GOOD)
    with pytest.raises(DataError, match=r"no data file for subset 'test'.*train\.jsonl"):
        task.load_dataset("test")


def test_closed_set_labels_file_that_does_not_exist(data):
    task = setup_task(data, "[TEXT:src] -> [TEXT:tgt,closed_set]",
                      "--closed-set-labels", "tgt=labels.txt")
    with pytest.raises(OSError) as info:
        task.load_dataset("train")
    assert str(data / "labels.txt") in str(info.value)


def test_closed_set_labels_file_is_read_in_order(data):
    (data / "labels.txt").write_text("no\nyes\n\nmaybe  later\n", encoding="utf-8")
    task = setup_task(data, "[TEXT:src] -> [TEXT:tgt,closed_set]",
                      "--closed-set-labels", "tgt=labels.txt")
    task.load_dataset("train")
    assert task.labels == {"tgt": ["no", "yes", "maybe later"]}
    assert task.closed_set("tgt").labels == ("no", "yes", "maybe later")


def test_closed_set_value_outside_the_labels_file(data):
    (data / "labels.txt").write_text("yes\n", encoding="utf-8")
    task = setup_task(data, "[TEXT:src] -> [TEXT:tgt,closed_set]",
                      "--closed-set-labels", "tgt=labels.txt")
    with pytest.raises(InvalidRows, match="'no' is not one of the 1 closed-set labels") as info:
        task.load_dataset("train")
    assert [(e.path, e.line) for e in info.value.errors] == \
        [(str(data / "train.jsonl"), line) for line in range(2, len(ROWS) + 1, 2)]


@pytest.mark.parametrize("option, message", [
    ("tgt", "expected 'column=path', got 'tgt'"),
    ("tgt=", "expected 'column=path', got 'tgt='"),
    ("tgtt=labels.txt", "names column(s) ['tgtt'], but the instruction's closed_set target "
                        "is ['tgt']"),
])
def test_closed_set_labels_option_typos_are_errors(data, option, message):
    (data / "labels.txt").write_text("yes\nno\n", encoding="utf-8")
    task = setup_task(data, "[TEXT:src] -> [TEXT:tgt,closed_set]", "--closed-set-labels", option)
    with pytest.raises(ValueError) as info:
        task.load_dataset("train")
    assert message in str(info.value)


def test_closed_set_labels_for_a_free_text_target_is_an_error(data):
    (data / "labels.txt").write_text("yes\n", encoding="utf-8")
    task = setup_task(data, GOOD, "--closed-set-labels", "tgt=labels.txt")
    with pytest.raises(ValueError, match="closed_set target is absent"):
        task.load_dataset("train")


@pytest.mark.parametrize("flag, decodes", [((), True), (("--no-eval-metrics",), False)])
def test_validation_decoding_is_on_unless_switched_off(data, flag, decodes):
    task = setup_task(data, GOOD, *flag)
    assert task.cfg.no_eval_metrics is not decodes


def test_eval_beam_and_max_len_set_validation_decoding(data):
    """--eval-beam and --eval-max-len reach the search that validation decodes with: an
    untrained model never stops early, so its outputs run to the length limit."""
    cfg = convert_namespace_to_omegaconf(parse_args(
        data, GOOD, "--eval-beam", "3", "--eval-max-len", "2", "--embed-dim", "32",
        "--ffn-embed-dim", "64", "--encoder-layers", "1", "--decoder-layers", "1"))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    model = task.build_model(cfg.model).eval()
    generator = task.sequence_generator
    assert generator.beam_size == 3 and generator.max_len_b == 2
    dataset = task.datasets["valid"]
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    predictions = task.predictions(model, sample, generator, task.cfg.eval_max_len)
    assert len(predictions) == 4
    assert all(1 <= len(p) <= 3 and int(p[-1]) == task.dictionary.eos() for p in predictions)
    assert max(len(p) for p in predictions) == 3  # two tokens, then the forced end
    _, _, log = task.valid_step(sample, model, task.build_criterion(cfg.criterion))
    # validation scored every row: the references, and outputs of two tokens at most (an
    # untrained model may pick location tokens, which decode to no word)
    assert log["_bleu_ref_len"] > 0 and log["_bleu_sys_len"] <= 2 * len(predictions)


def test_an_output_with_no_room_after_its_prefix_is_a_clear_error(data):
    """A closed-set label cannot end before the length limit when the forced prefix takes
    the room: beam search then has no hypothesis at all, which is reported, not indexed."""
    instruction = "[TEXT:src] -> [TEXT:src,no_loss] [TEXT:tgt,closed_set]"
    cfg = convert_namespace_to_omegaconf(parse_args(
        data, instruction, "--embed-dim", "32", "--ffn-embed-dim", "64", "--encoder-layers",
        "1", "--decoder-layers", "1"))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    model = task.build_model(cfg.model).eval()
    dataset = task.datasets["valid"]
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    generator = task.build_generator([model], argparse.Namespace(beam=2, max_len_a=0,
                                                                 max_len_b=3))
    with pytest.raises(ValueError, match=r"decoding found no complete output for row \d+: its "
                                         r"forced decoder prefix has \d+ tokens"):
        task.predictions(model, sample, generator, 3)


# --- through fairseq-train itself ---------------------------------------------------------


def fairseq_train(data_dir, save_dir, instruction):
    return subprocess.run(tiny_train_command(data_dir, save_dir, instruction, "--lr", "0.001",
                                             "--batch-size", "4", "--max-epoch", "1",
                                             "--num-bins", "4"),
                          capture_output=True, text=True, timeout=300, env=ONE_THREAD)


def test_fairseq_train_with_an_instruction_and_no_task_trains_the_instruction_task(data,
                                                                                   tmp_path):
    """The call README promises, as written: fairseq's console script, no --task (and
    --tensorboard-logdir works out of the box)."""
    save_dir = tmp_path / "checkpoints"
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "fairseq-train"), str(data),
         "--user-dir", USER_DIR, "--instruction", "[TEXT:src] -> [TEXT:tgt]", "--arch",
         "ofasys_tiny", "--embed-dim", "16", "--ffn-embed-dim", "32", "--encoder-layers", "1",
         "--decoder-layers", "1", "--criterion", "instruction_ce", "--optimizer", "adam",
         "--batch-size", "4", "--max-epoch", "1", "--vocab-size", "40", "--cpu",
         "--num-workers", "0", "--save-dir", str(save_dir),
         "--tensorboard-logdir", str(tmp_path / "tensorboard")],
        capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "task: InstructionTask" in result.stdout + result.stderr
    assert "checkpoint_last.pt" in checkpoints_in(save_dir)
    events = [f for _, _, files in os.walk(tmp_path / "tensorboard") for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events), events


def test_an_instruction_without_a_task_chooses_the_instruction_task():
    assert choose_instruction_task(["data", "--instruction", "x"])[-2:] == ["--task",
                                                                           "instruction"]
    assert choose_instruction_task(["data", "--instruction=x"])[-2:] == ["--task", "instruction"]
    for argv in (["data", "--instruction", "x", "--task", "multitask"],
                 ["data", "--task=translation", "--instruction", "x"], ["data"]):
        assert choose_instruction_task(argv) == argv
    assert fairseq_tool("/venv/bin/fairseq-train") == "train"
    assert fairseq_tool("/site-packages/fairseq_cli/generate.py") == "generate"
    assert fairseq_tool("/venv/bin/pytest") is None and fairseq_tool("train.py") is None


@pytest.mark.parametrize("command, expected", [
    (["fairseq-train", "--user-dir", USER_DIR, "--task", "instruction"],
     ["--instruction INSTRUCTION", "the task, e.g.", "--embed-dim EMBED_DIM", "model width",
      "--ctc-weight", "--closed-set-labels"]),
    (["ofasys-train", "--instruction", "[TEXT:a] -> [TEXT:b]"],
     ["--instruction INSTRUCTION", "--embed-dim EMBED_DIM"]),
    (["fairseq-generate", "--user-dir", USER_DIR, "--task", "multitask"],
     ["--tasks TASKS", "--eval-max-len", "--beam BEAM"]),
])
def test_help_lists_the_task_model_and_criterion_options(command, expected):
    """fairseq prints --help before it adds them; the plugin's full help has them."""
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), command[0]),
                             *command[1:], "--help"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for text in expected:
        assert text in result.stdout


def checkpoints_in(save_dir):
    return [f for f in os.listdir(save_dir) if f.endswith(".pt")] if os.path.isdir(save_dir) else []


def test_cli_refuses_an_unsupported_modality_before_training(data, tmp_path):
    instruction = "[VIDEO:clip] -> [TEXT:cap]"
    save_dir = tmp_path / "checkpoints"
    result = fairseq_train(data, save_dir, instruction)
    assert result.returncode != 0
    assert "InstructionError: VIDEO slots are not supported yet" in result.stderr, \
        result.stderr[-3000:]
    assert f"\n  {instruction}\n  ^" in result.stderr  # the caret under '[VIDEO'
    assert checkpoints_in(save_dir) == []


def test_cli_reports_a_missing_column_with_the_file(data, tmp_path):
    save_dir = tmp_path / "checkpoints"
    result = fairseq_train(data, save_dir, "[TEXT:source] -> [TEXT:tgt]")
    assert result.returncode != 0
    assert "DataError" in result.stderr, result.stderr[-3000:]
    assert f"{data / 'train.jsonl'}, line 1, column 'source'" in result.stderr
    assert checkpoints_in(save_dir) == []


def test_generate_prints_box_outputs_as_fractions_with_or_without_post_processing():
    detokenize = SentencepieceDetokenizer({"TEXT": {}, "BOX": {"num_bins": 16}}).decode
    assert detokenize("<bin_0> <bin_3> <bin_12> <bin_15>") == "0.000,0.200,0.800,1.000"
    assert detokenize("<bin_0><bin_3><bin_12><bin_15>") == "0.000,0.200,0.800,1.000"
    assert detokenize("\u2581a \u2581red \u2581circle") == "a red circle"
    assert detokenize("a red circle") == "a red circle"

"""``make results`` (scripts/results.py): a seed trains the demo's generalist, then each task
alone on the batches the generalist gave it, scores both on the test splits, and is kept;
the table's spread and verdict."""
import json
import math
import os

import demo  # scripts/ is on the path
import demo_data
import pytest
import results

TASKS = ("nli", "translation")
# translation alone for the first 10 updates: the specialists must drop the run's stages
STAGES = ["++task.stages={first:{until:10,tasks:[translation]},both:{tasks:[nli,translation]}}"]
HELD_OUT = 60  # validation and test rows per task: few, to decode quickly


def read(path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def last_num_updates(log_path: str) -> float:
    with open(log_path, encoding="utf-8") as f:
        return demo.validations(f.read())[-1]["num_updates"]


@pytest.mark.slow
def test_a_seed_trains_the_generalist_then_each_task_alone_and_is_kept(tmp_path, monkeypatch):
    every_task = demo.demo_tasks()
    tasks = {name: every_task[name] for name in TASKS}
    others = [f"~task.tasks.{name}" for name in every_task if name not in TASKS]
    monkeypatch.setattr(demo, "EXTRA_OVERRIDES", [*others, *STAGES, "optimization.max_update=30"])
    for name in TASKS:
        monkeypatch.setitem(demo.DATA_WRITERS, name, lambda out, name=name: demo_data.write_task(
            out, name, 3000, HELD_OUT, seed=1, test=HELD_OUT))
    data_dirs = demo.write_data(str(tmp_path), tasks)

    measured = results.measure_seed(str(tmp_path), 2, tasks, data_dirs)

    seed_dir = tmp_path / "seed_2"
    with open(seed_dir / "generalist" / "train.log", encoding="utf-8") as f:
        assert "'seed': 2" in f.read()
    # the demo's rounds: translation alone for the first 10 updates, then both in each
    assert measured["translation"]["batches"] == 30 and measured["nli"]["batches"] == 20
    for name in TASKS:
        specialist_log = seed_dir / "specialists" / name / "train.log"
        assert last_num_updates(specialist_log) == measured[name]["batches"]
        value = measured[name]
        assert value["metric"] == every_task[name]["metrics"][0]
        expected = value["generalist"] / value["specialist"] if value["specialist"] else math.nan
        assert value["ratio"] == pytest.approx(expected, nan_ok=True)
        # scored on the test split, each model at its best validation checkpoint
        key = f"{name}_{value['metric']}"
        generalist, specialist = seed_dir / "generalist", seed_dir / "specialists" / name
        best = demo.best_validation(read(generalist / "train.log"))
        assert value["generalist_valid"] == best[key]
        assert value["specialist_valid"] == max(v[key] for v in demo.validations(
            read(specialist / "train.log")))
        for run, test_value in ((generalist, value["generalist"]),
                                (specialist, value["specialist"])):
            test_log = read(run / "test.log")
            assert (f"test: task {name}: {HELD_OUT} examples from "
                    f"{os.path.join(data_dirs[name], 'test.jsonl')}") in test_log
            assert "checkpoint_best.pt" in test_log
            last_line = [line for line in test_log.splitlines() if "on 'test' subset |" in line]
            assert demo.log_fields(last_line[-1])[key] == test_value
    assert demo.EXTRA_OVERRIDES[-1] == "optimization.max_update=30"  # the seed's is gone

    # measured seeds are read back, not trained again (an interrupted run continues)
    with open(seed_dir / "results.json", encoding="utf-8") as f:
        assert json.dumps(json.load(f)) == json.dumps(measured)  # NaN ratios too
    os.rename(seed_dir / "generalist", tmp_path / "trained")
    read_back = results.measure_seed(str(tmp_path), 2, tasks, data_dirs)
    assert json.dumps(read_back) == json.dumps(measured)
    assert not (seed_dir / "generalist").exists()


def test_the_table_gives_mean_spread_each_seeds_ratio_and_whether_all_keep_95_percent():
    run = {"metric": "accuracy", "batches": 10}
    seeds = [{"nli": {**run, "generalist": 90.0, "specialist": 100.0, "ratio": 0.90},
              "digits": {**run, "generalist": 96.0, "specialist": 100.0, "ratio": 0.96}},
             {"nli": {**run, "generalist": 98.0, "specialist": 100.0, "ratio": 0.98},
              "digits": {**run, "generalist": 98.0, "specialist": 98.0, "ratio": 1.0}}]
    header, rule, nli, digits = results.summary_table([1, 2], seeds)
    assert header.count("ratio seed") == 2 and rule.count("|") == header.count("|")
    assert nli == ("| nli | accuracy | 94.0 ± 5.7 (90.0-98.0) | 100.0 ± 0.0 (100.0-100.0) "
                   "| 0.90 | 0.98 | no |")
    assert digits.endswith("| 0.96 | 1.00 | yes |")

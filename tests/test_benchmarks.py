"""The benchmarks (``python -m benchmarks``) in their quick mode. The criterion one builds
a real task, model and batches, and the three variants agree on loss, nll and gradients;
the image pipeline, multitask and train_speed ones report sane numbers. No timing is asserted."""
import io
import math
from dataclasses import replace

import pytest

from benchmarks import (audio_pipeline, data_loading, decoding, image_pipeline, multitask,
                        train_speed)
from benchmarks.criterion import GRAD_RTOL, QUICK, VARIANTS, run


def test_quick_benchmark_variants_agree():
    out = io.StringIO()
    results = run(replace(QUICK, warmup=0), out=out)  # raises BenchmarkError on disagreement
    report = out.getvalue()

    assert len(results) == 2  # the 3-label and the many-label workloads
    for workload, rows in results.items():
        assert list(rows) == list(VARIANTS)
        ours = rows["ours (instruction_ce)"]
        assert math.isfinite(ours["loss"]) and ours["loss"] > 0
        for name, row in rows.items():
            assert row["loss"] == pytest.approx(ours["loss"], rel=1e-4), (workload, name)
            assert row["nll"] == pytest.approx(ours["nll"], rel=1e-4), (workload, name)
            assert row["grad_error"] <= GRAD_RTOL
            assert row["seconds"] > 0 and row["peak_bytes"] > 0
            assert name in report
        # ours projects the scored positions only; the baselines every decoder position
        assert ours["logits"] < rows["A: full projection"]["logits"]
        assert rows["A: full projection"]["logits"] == rows["B: dense masks (OFA)"]["logits"]
    assert "all variants agree" in report


def test_quick_audio_pipeline_benchmark_reports_sane_numbers():
    """Both feature pipelines run and agree; each DataLoader setting trains an epoch of
    speech recognition. No timing is asserted."""
    settings = audio_pipeline.QUICK
    out = io.StringIO()
    results = audio_pipeline.run(settings, out=out)
    [features] = results["features"]
    assert features["sounds"] == settings.utterances and features["seconds"] > 0
    assert features["ours"] > 0 and features["baseline"] > 0 and features["kept"] > 0
    assert features["difference"] < 0.1  # log filterbanks of two resampling filters
    training = results["training"]
    assert [t["loader"] for t in training] == [loader.name for loader in settings.loaders]
    for row in training:
        assert row["batches"] == math.ceil(settings.train_rows / settings.batch_size)
        assert row["step_ms"] > 0 and 0.0 <= row["fraction"] <= 1.0
        assert row["loader"] in out.getvalue()


def test_quick_image_pipeline_benchmark_reports_sane_numbers():
    """Both preprocessing pipelines run and agree; every DataLoader setting trains an
    epoch. No timing is asserted."""
    settings = image_pipeline.QUICK
    out = io.StringIO()
    results = image_pipeline.run(settings, out=out)
    report = out.getvalue()

    rows = results["preprocessing"]
    assert [(r["images"], r["size"]) for r in rows] == [
        (s.name, size) for s in settings.image_sets for size in settings.sizes]
    for row in rows:
        assert row["ours"] > 0 and row["baseline"] > 0
        # both pipelines give nearly the same normalized batch (one 8-bit level ~ 0.017)
        assert 0 <= row["difference"] < 0.05, row
        if row["images"].startswith("PNG"):  # no JPEG draft: the very same pixels
            assert row["difference"] < 1e-4, row
        assert row["images"] in report
    waits = results["data_wait"]
    assert [w["loader"] for w in waits] == [loader.name for loader in settings.loaders]
    batches = math.ceil(settings.train_rows / settings.train_batch_size)
    for wait in waits:
        assert wait["batches"] == batches
        assert 0.0 <= wait["fraction"] <= 1.0
        assert wait["wait_ms"] >= 0 and wait["step_ms"] > 0 and wait["first_batch"] > 0
        assert wait["loader"] in report
    assert "preprocessing throughput" in report and "data wait" in report


def test_quick_multitask_benchmark_reports_sane_numbers():
    """Every batch mode's epoch is measured (efficiencies in (0, 1], homogeneous the
    baseline at 1.0) and every run trains; no timing is asserted."""
    settings = multitask.QUICK
    out = io.StringIO()
    results = multitask.run(settings, out=out)
    report = out.getvalue()

    padding = results["padding"]
    assert [r["mode"] for r in padding] == list(multitask.MODES)
    homogeneous = padding[0]
    assert homogeneous["mode"] == "homogeneous"
    assert homogeneous["encoder_x"] == 1.0 and homogeneous["decoder_x"] == 1.0
    examples = len(settings.tasks) * settings.rows
    for row in padding:
        assert 0 < row["encoder"] <= 1 and 0 < row["decoder"] <= 1, row
        assert row["encoder_real"] <= row["encoder_padded"]
        assert row["decoder_real"] <= row["decoder_padded"]
        assert row["steps"] > 0 and row["rows"] > 0
        assert row["mode"] in report
    by_mode = {r["mode"]: r for r in padding}
    assert by_mode["mixed"]["rows"] == examples  # every example once, tasks side by side
    assert by_mode["round"]["batches"] == by_mode["round"]["steps"] * len(settings.tasks)
    # text rows next to image rows pad the image part: mixed pads the encoder more
    assert by_mode["mixed"]["encoder"] < homogeneous["encoder"]

    throughput = results["throughput"]
    assert [r["name"] for r in throughput] == (
        [f"{name} alone" for name in settings.tasks]
        + [f"all tasks, {mode}" for mode in multitask.MODES])
    for row in throughput:
        assert row["steps"] == settings.steps
        assert row["tokens_per_s"] > 0 and row["samples_per_s"] > 0 and row["x_alone"] > 0
        assert row["name"] in report
        if row["name"].endswith(" alone"):
            assert row["x_alone"] == pytest.approx(1.0)
            assert list(row["task_tokens"]) == [row["name"][:-len(" alone")]]
        else:
            assert list(row["task_tokens"]) == list(settings.tasks)
    single = next(r for r in throughput if r["name"] == f"{settings.single_task} alone")
    assert single["x_single"] == 1.0
    assert "padding efficiency" in report and "training throughput" in report


@pytest.mark.slow  # three fairseq-train processes (about 25 s)
def test_quick_train_speed_benchmark_reports_sane_numbers():
    """Every model trains through fairseq-train on the same target tokens (the same ids,
    checked by the benchmark) and gets a positive, finite rate; no timing is asserted."""
    settings = train_speed.QUICK
    out = io.StringIO()
    results = train_speed.run(settings, out=out)
    report = out.getvalue()

    data = results["data"]
    assert data["rows"] == settings.rows
    # (run raises BenchmarkError unless both pipelines give every row the same target ids)
    assert 0 < data["target_tokens"] and 0 < data["source_tokens"]
    models = [train_speed.BASELINE, train_speed.MATCHED, train_speed.OURS]
    runs = results["runs"]
    assert [r["name"] for r in runs] == models * settings.runs
    for row in runs:
        # timed on whole epochs: every target token of the corpus once per timed epoch
        assert row["tokens"] == data["target_tokens"] * (settings.max_epoch - settings.warmup_epochs)
        assert row["updates"] > 0 and row["seconds"] > 0
        assert math.isfinite(row["tokens_per_s"]) and row["tokens_per_s"] > 0
        assert math.isfinite(row["x_baseline"]) and row["x_baseline"] > 0
        assert math.isfinite(row["final_loss"]) and row["final_loss"] > 0
        assert row["name"] in report
    # the same data and token budget: about as many updates per epoch (ours' extra <s>
    # and its batching may move a row to another batch)
    base, ours = runs[0], runs[2]
    assert ours["updates"] == pytest.approx(base["updates"], rel=0.25)
    summary = results["summary"]
    assert summary[train_speed.BASELINE]["x_baseline"] == 1.0
    assert all(math.isfinite(s["x_baseline"]) and s["x_baseline"] > 0 for s in summary.values())
    assert "x base" in report and "tok/CPU-s" in report


def test_quick_decoding_benchmark_reports_sane_numbers():
    """Every comparison decodes the same work in each variant (the benchmark checks equal
    token counts and equal outputs, raising BenchmarkError otherwise). No timing is asserted."""
    out = io.StringIO()
    results = decoding.run(decoding.QUICK, out=out)
    settings = decoding.QUICK
    rows = settings.corpus.valid_rows
    assert list(results["free"]) == list(train_speed.MODELS)
    for row in results["free"].values():
        assert row["tokens"] == rows * (settings.length + 1) and row["rate"] > 0
    assert list(results["constrained"]) == ["free text", "closed set", "BOX"]
    for row in results["constrained"].values():
        assert row["tokens"] == rows * (settings.label_tokens + 1) and row["rate"] > 0
    assert results["inference"]["OFASys.inference"]["rows"] == rows
    assert "OFASys.inference" in out.getvalue()


def test_quick_data_loading_benchmark_reports_sane_numbers():
    """Every start mode loads every row; the cached start maps its arrays. No timing is
    asserted."""
    out = io.StringIO()
    [row] = data_loading.run(data_loading.QUICK, out=out, fresh_processes=False)
    assert row["rows"] == 2000
    for mode, _, _ in data_loading.MODES:
        assert row[mode]["rows"] == 2000 and row[mode]["seconds"] > 0
        # offsets (8) and lines, rows, source and target sizes (4 each); no feature slot
        assert row[mode]["index_bytes"] == 2000 * 24
    assert "a cached start takes" in out.getvalue()

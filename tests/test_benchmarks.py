"""The benchmarks (``python -m benchmarks``) in their quick mode. The criterion one builds
a real task, model and batches, and the three variants agree on loss, nll and gradients;
the image pipeline one reports sane numbers. No timing is asserted."""
import io
import math
from dataclasses import replace

import pytest

from benchmarks import image_pipeline
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

"""The criterion benchmark (``python -m benchmarks``) in its quick mode: it builds a real
task, model and batches, and the three variants agree on loss, nll and gradients. No
timing is asserted."""
import io
import math
from dataclasses import replace

import pytest

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

"""The demo's report: report.md and a self-contained report.html with the metric table,
examples as a person checks them (images, a table, a sound, boxes drawn), loss curves
from the training log; the page rendered by a real headless Chromium (its images load, no
script errors; a screenshot is kept)."""
import os
import re
import shutil
import subprocess

import demo
import demo_data
import demo_report
import numpy as np
import pytest
import soundfile

from ofasys_fairseq.data.table import Table
from ofasys_fairseq.plan import TaskPlan

# fairseq's log lines as the demo's training writes them (format "simple")
LOG = "\n".join(
    [f"[2026-12-03 08:30:{u % 60:02d}][train_inner][INFO] - epoch 001:  {u} / 100 loss=3.1, "
     f"captions_loss={6 - u / 50:.3f}, grounding_loss={5 - u / 80:.3f}, num_updates={u}"
     for u in range(10, 110, 10)]
    + [f"[2026-12-03 08:31:{u % 60:02d}][valid][INFO] - epoch 00{u // 50} | valid on 'valid' "
       f"subset | loss 4.2 | captions_loss 4.1 | captions_cider {u / 2:.2f} | captions_samples 3"
       f" | grounding_loss 3.9 | grounding_box_acc {u / 3:.2f} | num_updates {u}"
       for u in (50, 100)])


@pytest.fixture
def results(tmp_path):
    shapes = demo_data.write_shapes(str(tmp_path / "data"), train=4, valid=3)
    rows = [Table(os.path.join(shapes, "valid.tsv"))[i] for i in range(2)]
    grounding = TaskPlan.parse(demo_data.SHAPES_GROUNDING_INSTRUCTION)
    picture = demo.draw_boxes(shapes, rows[0], "image", [10.0, 12.0, 30.0, 40.0], grounding,
                              str(tmp_path / "run" / "predictions" / "grounding" / "0.png"))
    sound = tmp_path / "run" / "spoken.wav"
    soundfile.write(sound, 0.1 * np.sin(np.arange(1600) / 5), 16000)
    caption = {"task": "captions", "metric": "cider", "validation": 50.0, "generate": 48.5,
               "data_dir": shapes, "pictures": [],
               "examples": [({"image": rows[0]["image"], "caption": rows[0]["caption"]},
                             "caption", rows[0]["caption"], "ok", rows[0]["caption"]),
                            ({"image": rows[1]["image"], "caption": rows[1]["caption"]},
                             "caption", "a green square", "WRONG", "a green square")]}
    grounding = {"task": "grounding", "metric": "box_acc", "validation": 33.33,
                 "generate": 30.0, "data_dir": shapes, "pictures": [picture],
                 "examples": [({"image": rows[0]["image"], "region": rows[0]["region"]},
                               "region", [10.0, 12.0, 30.0, 40.0], "WRONG", "0.1,0.2,0.4,0.6")]}
    table = {"task": "table_qa", "metric": "exact_match", "validation": float("nan"),
             "generate": 0.0, "data_dir": shapes, "pictures": [],
             "examples": [({"table": [["year", "gnp"], ["1947", "234.3"]], "answer": "234.3"},
                           "answer", str(sound), "ok", "")]}
    return [caption, grounding, table]


def test_report_files_hold_the_table_examples_and_curves(results, tmp_path):
    out = str(tmp_path / "run")
    html_path, md_path = demo_report.write_report(out, results, LOG)
    md = open(md_path, encoding="utf-8").read()
    assert "| captions | cider | 50.00 | 48.50 |" in md
    assert "| table_qa | exact_match | n/a | 0.00 |" in md
    for link in re.findall(r"\]\(([^)]+)\)", md):  # every picture and file it links exists
        assert os.path.isfile(os.path.join(out, link)), link
    assert "(WRONG; reference" in md and "year : gnp / 1947 : 234.3" in md
    assert "loss_curves.png" in md and os.path.getsize(os.path.join(out, "loss_curves.png"))

    page = open(html_path, encoding="utf-8").read()
    sources = re.findall(r"src=['\"]([^'\"]+)['\"]", page)
    assert sources and all(s.startswith("data:") for s in sources)  # self-contained
    assert page.count("<img") == 2 + 1 + 1 + 1  # inputs, the drawn boxes, the curves
    assert "<audio controls" in page and "<td>234.3</td>" in page
    assert "<span class='WRONG'>" in page and "[10.0, 12.0, 30.0, 40.0]" in page


def test_training_curves_read_every_task_from_the_log():
    curves = demo_report.training_curves(LOG, ["captions", "grounding"])
    assert curves["captions"]["updates"] == [float(u) for u in range(10, 110, 10)]
    assert curves["grounding"]["loss"][0] == pytest.approx(5 - 10 / 80, abs=1e-3)
    assert curves["captions"]["valid"]["cider"] == [25.0, 50.0]
    assert curves["grounding"]["valid_updates"] == [50.0, 100.0]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian's package "
                                              "'chromium'; .ci/run installs it): the report is "
                                              "not rendered in a browser here")
def test_report_renders_in_a_headless_browser(results, tmp_path):
    html_path, _ = demo_report.write_report(str(tmp_path / "run"), results, LOG)
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
               "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*browser, "--dump-dom", f"file://{html_path}"], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    assert 'data-images="5"' in body and 'data-images-loaded="true"' in body, body
    assert 'data-errors="0"' in body, body
    screenshot = tmp_path / "report.png"
    shot = subprocess.run([*browser, f"--screenshot={screenshot}", "--window-size=1200,2400",
                           f"file://{html_path}"], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    print(f"screenshot of the rendered report: {screenshot}")

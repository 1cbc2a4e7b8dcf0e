"""ofasys-validate and --validate-data: every bad row of every subset, located, in one run."""
import base64
import io
import json

import demo_data
import pytest
from PIL import Image

from ofasys_fairseq.data.table import DataError, InvalidRows
from ofasys_fairseq.validate import main
from tests.helpers import instruction_task

GROUNDING = demo_data.SHAPES_GROUNDING_INSTRUCTION


def png_base64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def append_rows(path, rows) -> int:
    """Append tab-separated rows; returns the line number of the first one."""
    with open(path, encoding="utf-8") as f:
        first = sum(1 for _ in f) + 1
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write("\t".join(row) + "\n")
    return first


def validate(data_dir, capsys, *extra):
    status = main([str(data_dir), "--instruction", GROUNDING, "--image-size", "64", *extra])
    return status, capsys.readouterr().out


def test_clean_data_passes(tmp_path, capsys):
    data = demo_data.write_shapes(str(tmp_path), train=12, valid=4)
    status, out = validate(data, capsys)
    assert status == 0 and "0 invalid rows in train, valid" in out


def test_every_bad_row_is_listed_with_file_line_and_column(tmp_path, capsys):
    data = demo_data.write_shapes(str(tmp_path), train=12, valid=4)
    with open(tmp_path / "shapes" / "images" / "broken.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")
    valid_line = append_rows(tmp_path / "shapes" / "valid.tsv", [
        ["images/00000.png", "c", "q", "a", "red circle", "1,2,3"],
        ["images/missing.png", "c", "q", "a", "red circle", "1,2,3,4"],
        ["images/00001.png", "c", "q", "a", "red circle", "1,2,300,4"],
        ["images/00002.png", "c", "q", "a", "red circle", "9,2,3,4"],
        [f"data:image/png;base64,{png_base64()}", "c", "q", "a", "red circle", "1,2,3,4"],
    ])
    train_line = append_rows(tmp_path / "shapes" / "train.tsv", [
        ["images/broken.png", "c", "q", "a", "red circle", "1,2,3,4"]])
    status, out = validate(data, capsys)
    valid, train = str(tmp_path / "shapes" / "valid.tsv"), str(tmp_path / "shapes" / "train.tsv")
    expected = [
        f"{train}, line {train_line}, column 'image': cannot decode the image",
        f"{valid}, line {valid_line}, column 'region': expected 4 coordinates x0,y0,x1,y1, got 3",
        f"{valid}, line {valid_line + 1}, column 'image': no such image file",
        f"{valid}, line {valid_line + 2}, column 'region': box 1,2,300,4 is outside the 64x64 "
        f"image",
        f"{valid}, line {valid_line + 3}, column 'region': expected x0 < x1 and y0 < y1",
    ]
    assert status == 1
    for message in expected:
        assert sum(line.startswith(message) for line in out.splitlines()) == 1, (message, out)
    assert "5 invalid rows in train, valid" in out  # the data: URI row is fine


def test_a_tasks_file_is_checked_task_by_task(tmp_path, capsys):
    nli = demo_data.write_task(str(tmp_path), "nli", train=20, valid=5, seed=1)
    shapes = demo_data.write_shapes(str(tmp_path), train=12, valid=4)
    line = append_rows(tmp_path / "shapes" / "valid.tsv", [
        ["images/00000.png", "c", "q", "a", "red circle", "1,2,300,4"]])
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(json.dumps({"tasks": {
        "nli": {"instruction": demo_data.NLI_INSTRUCTION, "data": nli},
        "grounding": {"instruction": GROUNDING, "data": shapes}}}))
    status = main(["--tasks", str(tasks), "--image-size", "64"])
    out = capsys.readouterr().out
    assert status == 1
    assert f"0 invalid rows in train, valid of {nli}" in out
    assert f"1 invalid rows in train, valid of {shapes}" in out
    assert f"{tmp_path / 'shapes' / 'valid.tsv'}, line {line}, column 'region': box 1,2,300,4 " \
           f"is outside the 64x64 image" in out


def test_a_missing_column_is_reported_for_the_subset(tmp_path, capsys):
    data = demo_data.write_shapes(str(tmp_path), train=12, valid=4)
    status, out = validate(data, capsys, "--instruction",
                           "[IMAGE:picture] what is it? -> [TEXT:caption]")
    assert status == 1 and "reads column(s) 'picture'" in out


def test_validate_data_flag_fails_loading_with_every_bad_image(tmp_path):
    data = demo_data.write_shapes(str(tmp_path), train=12, valid=4)
    for name in ("00012.png", "00013.png"):  # the first two validation images
        with open(tmp_path / "shapes" / "images" / name, "wb") as f:
            f.write(b"not an image")
    lazy = instruction_task(data, GROUNDING, image_size=64)
    lazy.load_dataset("valid")  # images are decoded when batches are built
    with pytest.raises(DataError, match="cannot decode the image"):
        lazy.datasets["valid"][0]
    eager = instruction_task(data, GROUNDING, image_size=64, validate_data=True)
    with pytest.raises(InvalidRows) as info:
        eager.load_dataset("valid")
    assert [(e.line, e.column) for e in info.value.errors] == [(2, "image"), (3, "image")]

"""``ofasys-prepare`` coco-captions, vqa, refcoco, snli-ve and image-folder on tiny trees
in each dataset's official layout: good rows written (their images readable from the
output file), every bad one counted with its reason, re-runs identical."""
import json

import pytest
from PIL import Image

from ofasys_fairseq.data.table import Table
from ofasys_fairseq.instruction import Instruction
from ofasys_fairseq.modalities import Context, get_modality
from ofasys_fairseq.prepare import main


def image(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "white").save(path)


def dump(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def rows(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def run(capsys, *argv):
    main([str(a) for a in argv])
    return capsys.readouterr().out


def images_load(out_dir, subset, column="image"):
    """Every row's image decodes through the IMAGE modality, from the written file."""
    table = Table(str(out_dir / f"{subset}.jsonl"))
    modality = get_modality("IMAGE")
    slot = Instruction.parse(f"[IMAGE:{column}] -> [TEXT:x]").slots[0]
    ctx = Context(None, {"image_size": 32}, base_dir=table.base_dir)
    return all(modality.read(table[i][column], slot, ctx) is not None for i in range(len(table)))


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    for split, ids in (("train", [1, 2, 3]), ("val", [4, 5])):
        files = {i: f"COCO_{split}2014_{i:012d}.jpg" for i in ids}
        for i in ids[:-1] if split == "train" else ids:  # image 3's file is missing
            image(root / f"{split}2014" / files[i])
        captions = [{"image_id": i, "id": 10 * i + k, "caption": f" a  picture {i} number {k}"}
                    for i in ids for k in range(2) if i != 2] + \
                   [{"image_id": 99, "id": 999, "caption": "lost"}]
        dump(root / "annotations" / f"captions_{split}2014.json",
             {"images": [{"id": i, "file_name": f} for i, f in files.items()],
              "annotations": captions})
    return root


def test_coco_captions_one_row_per_image_with_every_caption(coco, tmp_path, capsys):
    out = tmp_path / "out"
    printed = run(capsys, "coco-captions", coco, out)
    train = rows(out / "train.jsonl")
    assert train == [{"image": "../coco/train2014/COCO_train2014_000000000001.jpg",
                      "caption": ["a picture 1 number 0", "a picture 1 number 1"], "id": 1}]
    assert [r["id"] for r in rows(out / "valid.jsonl")] == [4, 5]
    assert images_load(out, "valid")
    assert "skipped 2: caption of an image the annotations do not list" in printed
    assert "skipped 1: image without captions" in printed  # image 2
    assert "skipped 1: image file missing" in printed  # image 3
    before = (out / "train.jsonl").read_bytes()
    run(capsys, "coco-captions", coco, out)
    assert (out / "train.jsonl").read_bytes() == before


def test_coco_captions_in_karpathys_split(coco, tmp_path, capsys):
    karpathy = tmp_path / "dataset_coco.json"
    dump(karpathy, {"images": [{"cocoid": 1, "split": "train"}, {"cocoid": 4, "split": "restval"},
                               {"cocoid": 5, "split": "test"}, {"cocoid": 77, "split": "val"}]})
    out = tmp_path / "out"
    printed = run(capsys, "coco-captions", coco, out, "--karpathy", karpathy)
    assert [r["id"] for r in rows(out / "train.jsonl")] == [1, 4]  # restval trains
    assert [r["id"] for r in rows(out / "test.jsonl")] == [5]
    assert not (out / "valid.jsonl").exists()
    assert "skipped 2: image not in Karpathy's split" in printed  # images 2 and 3
    assert "skipped 1: Karpathy split entry for an image the annotations do not list" in printed


def test_vqa_questions_with_their_ten_answers(tmp_path, capsys):
    root = tmp_path / "vqa"
    image(root / "val2014" / "COCO_val2014_000000000042.jpg")
    questions = [{"image_id": 42, "question": "what  colour?", "question_id": 420},
                 {"image_id": 42, "question": "how many?", "question_id": 421},
                 {"image_id": 43, "question": "where?", "question_id": 430}]
    dump(root / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": questions})
    answers = [{"answer": "red" if k < 7 else "dark red", "answer_id": k + 1} for k in range(10)]
    dump(root / "v2_mscoco_val2014_annotations.json",
         {"annotations": [{"question_id": 420, "image_id": 42, "answers": answers}]})
    dump(root / "v2_OpenEnded_mscoco_test2015_questions.json",
         {"questions": [{"image_id": 42, "question": "why?", "question_id": 9}]})
    image(root / "test2015" / "COCO_test2015_000000000042.jpg")
    out = tmp_path / "out"
    printed = run(capsys, "vqa", root, out, "--splits", "val2014=valid,test2015=test")
    assert rows(out / "valid.jsonl") == [{
        "image": "../vqa/val2014/COCO_val2014_000000000042.jpg", "question": "what colour?",
        "question_id": 420, "answers": ["red"] * 7 + ["dark red"] * 3}]
    assert rows(out / "test.jsonl")[0]["question"] == "why?"  # no annotations: no answers
    assert "answers" not in rows(out / "test.jsonl")[0]
    assert images_load(out, "valid")
    assert "skipped 1: question without annotated answers" in printed  # 421
    assert "skipped 1: image file missing" in printed  # 430


def test_refcoco_expressions_with_pixel_boxes(tmp_path, capsys):
    images = tmp_path / "train2014"
    image(images / "COCO_train2014_000000000007.jpg", (100, 80))
    dump(tmp_path / "instances.json", {
        "images": [{"id": 7, "file_name": "COCO_train2014_000000000007.jpg"}],
        "annotations": [{"id": 70, "image_id": 7, "bbox": [10, 20, 30.5, 40]},
                        {"id": 71, "image_id": 7, "bbox": [0, 0, 0, 5]}]})
    refs = [{"ref_id": 1, "ann_id": 70, "image_id": 7, "split": "testA",
             "sentences": [{"sent": "left  man"}, {"sent": "man on the left"}]},
            {"ref_id": 2, "ann_id": 70, "image_id": 7, "split": "val",
             "sentences": [{"sent": "the man"}]},
            {"ref_id": 3, "ann_id": 71, "image_id": 7, "split": "train",
             "sentences": [{"sent": "nothing"}]},
            {"ref_id": 4, "ann_id": 72, "image_id": 7, "split": "train",
             "sentences": [{"sent": "unknown"}]}]
    dump(tmp_path / "refs.json", refs)
    out = tmp_path / "out"
    printed = run(capsys, "refcoco", tmp_path / "refs.json", tmp_path / "instances.json",
                  images, out)
    assert rows(out / "testA.jsonl") == [
        {"image": "../train2014/COCO_train2014_000000000007.jpg", "text": text,
         "region": "10,20,40.5,60", "ref_id": 1} for text in ("left man", "man on the left")]
    assert [r["ref_id"] for r in rows(out / "valid.jsonl")] == [2]
    assert rows(out / "train.jsonl") == []
    assert "skipped 1: ref whose box is empty" in printed
    assert "skipped 1: ref whose annotation or image instances.json does not list" in printed
    # the boxes read as BOX cells of their images
    box = get_modality("BOX")
    slot = Instruction.parse("[IMAGE:image] -> [BOX:region]").slots[1]
    assert box.read(rows(out / "testA.jsonl")[0]["region"], slot, Context(None)) == \
        [10, 20, 40.5, 60]

    (tmp_path / "refs(unc).p").write_bytes(b"not opened")
    with pytest.raises(SystemExit, match="a pickle runs code when it is read"):
        main(["refcoco", str(tmp_path / "refs(unc).p"), str(tmp_path / "instances.json"),
              str(images), str(out)])


def test_snli_ve_pairs_with_gold_labels(tmp_path, capsys):
    images = tmp_path / "flickr30k_images"
    image(images / "1000.jpg")
    pairs = [{"Flickr30K_ID": "1000", "sentence2": "A dog  runs.", "gold_label": "entailment",
              "pairID": "p1"},
             {"Flickr30K_ID": "1000", "sentence2": "A cat.", "gold_label": "-", "pairID": "p2"},
             {"Flickr30K_ID": "2000", "sentence2": "Snow.", "gold_label": "neutral",
              "pairID": "p3"}]
    (tmp_path / "snli_ve_dev.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = tmp_path / "out"
    printed = run(capsys, "snli-ve", tmp_path, images, out)
    assert rows(out / "valid.jsonl") == [{"image": "../flickr30k_images/1000.jpg",
                                          "hypothesis": "A dog runs.", "label": "entailment",
                                          "pair_id": "p1"}]
    assert "skipped 1: pair without a gold label" in printed
    assert "skipped 1: image file missing" in printed


def test_image_folder_classes_named_by_a_labels_file(tmp_path, capsys):
    root = tmp_path / "imagenet"
    image(root / "train" / "n01440764" / "a.JPEG")
    image(root / "train" / "n01443537" / "b.png")
    image(root / "train" / "n99999999" / "c.png")
    (root / "train" / "n01440764" / "notes.txt").write_text("not an image")
    image(root / "val" / "n01443537" / "d.jpg")
    labels = tmp_path / "LOC_synset_mapping.txt"
    labels.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    out = tmp_path / "out"
    printed = run(capsys, "image-folder", root, out, "--labels", labels)
    assert rows(out / "train.jsonl") == [
        {"image": "../imagenet/train/n01440764/a.JPEG", "label": "tench"},
        {"image": "../imagenet/train/n01443537/b.png", "label": "goldfish"}]
    assert rows(out / "valid.jsonl") == [{"image": "../imagenet/val/n01443537/d.jpg",
                                          "label": "goldfish"}]
    assert images_load(out, "train")
    assert "skipped 1: class folder the labels file does not name" in printed
    assert "skipped 1: file that is not an image (by its extension)" in printed
    run(capsys, "image-folder", root, tmp_path / "plain")  # no labels file: folder names
    assert rows(tmp_path / "plain" / "valid.jsonl")[0]["label"] == "n01443537"


def test_a_file_of_another_layout_is_named(tmp_path):
    dump(tmp_path / "annotations" / "captions_train2014.json", {"pictures": []})
    with pytest.raises(SystemExit, match="lacks the field 'images' of the official layout"):
        main(["coco-captions", str(tmp_path), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=r"captions_train2014.json: no such file"):
        main(["coco-captions", str(tmp_path / "nowhere"), str(tmp_path / "out")])

"""The demo's results as a report a person reads: ``report.html`` (one self-contained file:
pictures and sounds embedded) and ``report.md`` (the same, linking the files), both in
the run's directory.

Per task: the metric table (validation and fairseq-generate; generalist / specialist when
the specialists ran), a few validation examples as a person checks them (the image, the
question, the table, a sound to play, the prediction against the reference, marked), the
pictures the demo drew (boxes, spectrograms), and loss curves per task from the training
log (matplotlib).
"""
import base64
import html
import math
import mimetypes
import os
import re
from typing import Dict, List, Optional, Sequence

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
SOUND_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
# the page records, once loaded, whether every image decoded and any script error: a
# browser (the test's headless Chromium) reads both back from the DOM
LOAD_CHECK = """<script>
window.reportErrors = [];
window.addEventListener("error", e => window.reportErrors.push(String(e.message)));
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.imagesLoaded = images.every(i => i.complete && i.naturalWidth > 0);
  document.body.dataset.errors = window.reportErrors.length;
});
</script>"""


def training_curves(log: str, tasks: Sequence[str]) -> Dict[str, Dict[str, List]]:
    """Per task, from fairseq's log lines: training loss by update (``train_inner``) and
    validation values by update (``valid``, every ``<task>_<metric>``)."""
    curves = {t: {"updates": [], "loss": [], "valid_updates": [], "valid": {}} for t in tasks}
    for line in log.splitlines():
        fields = dict((k, float(v)) for k, v in re.findall(r"(\w+)[ =](-?\d+(?:\.\d+)?)", line))
        if "num_updates" not in fields:
            continue
        for task in tasks:
            curve = curves[task]
            if "[train_inner]" in line and f"{task}_loss" in fields:
                curve["updates"].append(fields["num_updates"])
                curve["loss"].append(fields[f"{task}_loss"])
            elif "valid on" in line:
                values = {k[len(task) + 1:]: v for k, v in fields.items()
                          if k.startswith(task + "_") and not k.endswith(("_tokens", "_samples"))}
                if values:
                    curve["valid_updates"].append(fields["num_updates"])
                    for name, value in values.items():
                        curve["valid"].setdefault(name, []).append(value)
    return curves


def plot_curves(curves: Dict[str, Dict[str, List]], path: str) -> Optional[str]:
    """One figure: training loss of every task (left), its main validation value (right)."""
    if not any(c["updates"] or c["valid_updates"] for c in curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (losses, valid) = plt.subplots(1, 2, figsize=(12, 4.5))
    for task, curve in curves.items():
        if curve["updates"]:
            losses.plot(curve["updates"], curve["loss"], label=task)
        main = next((k for k in curve["valid"] if k != "loss"), None)
        if main is not None and len(curve["valid"][main]) == len(curve["valid_updates"]):
            valid.plot(curve["valid_updates"], curve["valid"][main], marker="o",
                       label=f"{task} {main}")
    losses.set(title="training loss per task (bits per token)", xlabel="update")
    valid.set(title="validation, each task's first metric", xlabel="update")
    for axes in (losses, valid):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


# --- values as a person sees them ----------------------------------------------------------


def file_of(value, data_dir: str) -> Optional[str]:
    """The file a cell names (relative to the data directory, or as it stands), if any."""
    if not isinstance(value, str) or len(value) > 4096:
        return None
    for path in (os.path.join(data_dir, value), value):
        if os.path.isfile(path):
            return path
    return None


def data_uri(path: str) -> str:
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    with open(path, "rb") as f:
        return f"data:{kind};base64,{base64.b64encode(f.read()).decode()}"


def value_html(value, data_dir: str) -> str:
    path = file_of(value, data_dir)
    if path is not None and path.lower().endswith(IMAGE_EXTENSIONS):
        return f'<img src="{data_uri(path)}" alt="{html.escape(value)}" class="input">'
    if path is not None and path.lower().endswith(SOUND_EXTENSIONS):
        return f'<audio controls src="{data_uri(path)}"></audio>'
    if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
                       + "</tr>" for row in value)
        return f"<table class='cells'>{rows}</table>"
    if isinstance(value, list) and value and all(isinstance(c, float) for c in value):
        return html.escape("[" + ", ".join(f"{c:.1f}" for c in value) + "]")
    return html.escape(str(value))


def value_md(value, data_dir: str, report_dir: str) -> str:
    path = file_of(value, data_dir)
    if path is not None:
        link = os.path.relpath(path, report_dir)
        return f"![{value}]({link})" if path.lower().endswith(IMAGE_EXTENSIONS) \
            else f"[{os.path.basename(path)}]({link})"
    if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        return " / ".join(" : ".join(map(str, row)) for row in value)
    if isinstance(value, list) and value and all(isinstance(c, float) for c in value):
        return "[" + ", ".join(f"{c:.1f}" for c in value) + "]"
    return str(value).replace("|", "\\|").replace("\n", " ")


def number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


# --- the two reports --------------------------------------------------------------------


def write_report(out_dir: str, results: List[Dict[str, object]], log: str,
                 ratios: Optional[Dict[str, Dict[str, float]]] = None) -> List[str]:
    """Write ``report.html`` and ``report.md`` into ``out_dir``; returns their paths.

    Args:
        out_dir: the run's directory.
        results: per task (as ``demo.evaluate_task`` returns them): ``task``, ``metric``,
            ``validation``, ``generate``, ``examples`` (row, target column, prediction,
            mark, fairseq-generate's output), ``pictures``, ``data_dir``.
        log: the generalist's training log.
        ratios: task -> {``batches``, ``specialist``, ``ratio``}, when specialists ran.
    """
    curves = plot_curves(training_curves(log, [r["task"] for r in results]),
                         os.path.join(out_dir, "loss_curves.png"))
    paths = [os.path.join(out_dir, "report.html"), os.path.join(out_dir, "report.md")]
    with open(paths[0], "w", encoding="utf-8") as f:
        f.write(report_html(results, curves, ratios))
    with open(paths[1], "w", encoding="utf-8") as f:
        f.write(report_md(results, curves, ratios, out_dir))
    return paths


def metric_rows(results, ratios) -> List[List[str]]:
    header = ["task", "metric", "validation", "fairseq-generate"]
    if ratios:
        header += ["batches", "specialist", "generalist / specialist"]
    rows = [header]
    for r in results:
        row = [r["task"], r["metric"], number(r["validation"]), number(r["generate"])]
        if ratios:
            special = ratios[r["task"]]
            row += [str(special["batches"]), number(special["specialist"]),
                    number(special["ratio"])]
        rows.append(row)
    return rows


def report_html(results, curves: Optional[str], ratios) -> str:
    table = metric_rows(results, ratios)
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             "<title>ofasys-fairseq demo report</title><style>",
             "body{font-family:sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
             "img.input{height:72px;image-rendering:pixelated}"
             "img.picture{max-width:260px;image-rendering:pixelated}"
             ".ok{color:#080}.WRONG{color:#b00}.example{margin:0.6em 0}"
             "</style>", LOAD_CHECK, "</head><body>",
             "<h1>The generalist, task by task</h1><table>",
             "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table[0]) + "</tr>"]
    parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
              for row in table[1:]]
    parts.append("</table>")
    if curves:
        parts.append(f"<h2>Training</h2><img class='curves' src='{data_uri(curves)}' "
                     f"alt='loss curves per task' style='max-width:100%'>")
    for r in results:
        parts.append(f"<h2>{html.escape(r['task'])}</h2><p>{html.escape(r['metric'])}: "
                     f"{number(r['validation'])} (validation), {number(r['generate'])} "
                     f"(fairseq-generate); OFASys.inference on the first validation rows:</p>")
        for row, target, prediction, mark, generated in r["examples"]:
            inputs = " ".join(f"<b>{html.escape(k)}</b> {value_html(v, r['data_dir'])}"
                              for k, v in row.items() if k != target)
            parts.append(
                f"<div class='example'>{inputs}<br>&rarr; "
                f"{value_html(prediction, r['data_dir'])} <span class='{html.escape(mark)}'>"
                f"({html.escape(mark)})</span>; reference "
                f"{value_html(row[target], r['data_dir'])}</div>")
        for picture in r["pictures"]:
            parts.append(f"<img class='picture' src='{data_uri(picture)}' "
                         f"alt='{html.escape(os.path.basename(picture))}'>")
    parts.append("<p>Pictures: boxes in black from the data, magenta predicted; spectrograms "
                 "with the reference above the generated sound.</p></body></html>")
    return "\n".join(parts)


def report_md(results, curves: Optional[str], ratios, out_dir: str) -> str:
    table = metric_rows(results, ratios)
    lines = ["# The generalist, task by task", "",
             "| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    if curves:
        lines += ["", f"![loss curves per task]({os.path.relpath(curves, out_dir)})"]
    for r in results:
        lines += ["", f"## {r['task']}", ""]
        for row, target, prediction, mark, generated in r["examples"]:
            inputs = "; ".join(f"**{k}** {value_md(v, r['data_dir'], out_dir)}"
                               for k, v in row.items() if k != target)
            lines.append(f"- {inputs} -> {value_md(prediction, r['data_dir'], out_dir)} "
                         f"({mark}; reference {value_md(row[target], r['data_dir'], out_dir)})")
        lines += [f"- ![picture]({os.path.relpath(p, out_dir)})" for p in r["pictures"]]
    return "\n".join(lines) + "\n"

"""Writing a converted subset: one JSON object per line, counted in the summary."""
import json
import os
from typing import Callable, Dict, Iterable, Optional

from .summary import Summary


def write_subset(out_dir: str, subset: str, rows: Iterable[dict], summary: Summary) -> str:
    """Write ``out_dir/<subset>.jsonl`` (replacing it) and count its rows; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{subset}.jsonl")
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    summary.written[path] = count
    return path


def media_path(path: str, out_dir: str, summary: Summary, what: str) -> Optional[str]:
    """``path`` relative to the output directory (as the data files read it), or None
    (counted: ``what`` missing) when there is no such file."""
    if not os.path.isfile(path):
        summary.skip(f"{what} missing")
        return None
    return os.path.relpath(path, out_dir)


def read_json(path: str, what: str):
    """A downloaded JSON file; a missing or malformed one names itself and what it is."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file ({what})")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({what}): {error}") from None


def present_splits(splits: Dict[str, str], path_of: Callable[[str], str],
                   none_found: str) -> Dict[str, str]:
    """The splits (source name -> subset) whose file or folder ``path_of(name)`` exists;
    FileNotFoundError with ``none_found`` when none does."""
    present = {name: subset for name, subset in splits.items() if os.path.exists(path_of(name))}
    if not present:
        raise FileNotFoundError(none_found)
    return present

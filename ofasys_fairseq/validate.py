"""``ofasys-validate``: scan whole data sets the way training reads them and list
every bad row (missing or unreadable values, images that do not decode, boxes
that are malformed or outside their image), before any training starts.

    ofasys-validate DATA --instruction '...' [--valid-subset valid,test] [task options]
    ofasys-validate --tasks tasks.yaml [task options]       (every task of a multitask run)

It accepts fairseq-train's options (so ``--image-size``, ``--closed-set-labels``
... mean the same) and checks ``--train-subset`` plus every ``--valid-subset`` (for a
tasks file, each task's ``train_subset`` and ``valid_subset``). Exit status 1 when any
row is bad.
"""
import logging
import sys
from typing import List, Optional, Sequence

from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from .data.table import DataError, Table, find_split_file

logger = logging.getLogger(__name__)


def validate_subsets(task, subsets: Sequence[str]) -> List[DataError]:
    """Every bad row of ``subsets`` (the task must skip invalid rows and decode images)."""
    errors: List[DataError] = []
    for subset in subsets:
        try:
            table = Table(find_split_file(task.cfg.data, subset))
            dataset = task.dataset_for(table, task.bind_plan(table), with_target=True)
        except DataError as error:  # the file itself, or no usable row at all
            errors.append(error)
            continue
        errors.extend(dataset.invalid_rows)
        logger.info(f"{subset}: {len(table)} rows, {len(dataset.invalid_rows)} invalid")
    return errors


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .cli import _console_argv, _given

    argv = _console_argv(list(sys.argv[1:] if argv is None else argv))
    multitask = _given(argv, "--tasks")
    parser = options.get_training_parser()
    if not _given(argv, "--arch"):
        argv += ["--arch", "ofasys_tiny"]  # fairseq's parser needs one; no model is built
    args = options.parse_args_and_arch(parser, argv + [
        "--task", "multitask" if multitask else "instruction", "--skip-invalid-rows",
        "--validate-data"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    try:
        task.prepare()
    except DataError as error:
        print(error)
        return 1
    if multitask:
        checks = [(member, [spec.train_subset, spec.valid_subset])
                  for spec, member in zip(task.specs, task.members)]
    else:
        checks = [(task, [cfg.dataset.train_subset] + cfg.dataset.valid_subset.split(","))]
    errors = []
    for checked, subsets in checks:
        found = validate_subsets(checked, subsets)
        print(f"{len(found)} invalid rows in {', '.join(subsets)} of {checked.cfg.data}")
        errors.extend(found)
    for error in errors:
        print(error)
    return 1 if errors else 0


def cli() -> None:
    sys.exit(main())

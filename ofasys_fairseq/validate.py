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
from typing import List, Optional, Sequence, Union

from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from .data.table import DataError

logger = logging.getLogger(__name__)


def validate_subsets(task, subsets: Sequence[Union[str, List[str]]]) -> List[DataError]:
    """Every bad row of ``subsets`` (each a name, glob or list of them: ``open_subset``;
    the task must skip invalid rows and decode images)."""
    errors: List[DataError] = []
    for subset in subsets:
        try:
            tables = task.open_subset(task.cfg.data, subset)
            dataset = task.dataset_for(tables, task.bind_plan(tables), with_target=True)
        except DataError as error:  # the file itself, or no usable row at all
            errors.extend(getattr(error, "errors", [error]))
            continue
        errors.extend(dataset.invalid_rows)
        logger.info(f"{subset}: {sum(map(len, tables))} rows, {len(dataset.invalid_rows)} "
                    f"invalid")
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
        print(f"{len(found)} invalid rows in {', '.join(map(str, subsets))} of "
              f"{checked.cfg.data}")
        errors.extend(found)
    for error in errors:
        print(error)
    return 1 if errors else 0


def cli() -> None:
    sys.exit(main())

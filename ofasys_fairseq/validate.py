"""``ofasys-validate``: scan whole data sets the way training reads them and list
every bad row (missing or unreadable values, images that do not decode, boxes
that are malformed or outside their image), before any training starts.

    ofasys-validate DATA --instruction '...' [--valid-subset valid,test] [task options]

It accepts fairseq-train's options (so ``--image-size``, ``--closed-set-labels``
... mean the same) and checks ``--train-subset`` plus every ``--valid-subset``.
Exit status 1 when any row is bad.
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
    from .cli import _console_argv

    argv = _console_argv(list(sys.argv[1:] if argv is None else argv))
    parser = options.get_training_parser()
    if not any(a == "--arch" or a.startswith("--arch=") for a in argv):
        argv += ["--arch", "ofasys_tiny"]  # fairseq's parser needs one; no model is built
    args = options.parse_args_and_arch(parser, argv + ["--task", "instruction",
                                                        "--skip-invalid-rows", "--validate-data"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    try:
        task.prepare()
    except DataError as error:
        print(error)
        return 1
    subsets = [cfg.dataset.train_subset] + cfg.dataset.valid_subset.split(",")
    errors = validate_subsets(task, subsets)
    for error in errors:
        print(error)
    print(f"{len(errors)} invalid rows in {', '.join(subsets)} of {cfg.task.data}")
    return 1 if errors else 0


def cli() -> None:
    sys.exit(main())

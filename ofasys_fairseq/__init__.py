"""ofasys-fairseq: multimodal multitask learning from one-line instructions.

Importing the package (which ``--user-dir`` does) registers the task, model,
architectures, criterion and scorer with fairseq, and the checkpoint allow-list with torch;
on a fairseq tool's command line, ``--instruction`` without ``--task`` chooses the
instruction task (``cli.choose_task_on_fairseq_command_line``).
"""
import logging

from .checkpoint_safety import allow_fairseq_checkpoint_globals
from .cli import choose_task_on_fairseq_command_line, print_full_help_on_fairseq_command_line
from .instruction import Instruction, InstructionError

allow_fairseq_checkpoint_globals()
choose_task_on_fairseq_command_line()  # fairseq-train DATA --instruction "..." (no --task)
# fairseq's entry points log at DEBUG; Pillow would then log every PNG chunk it reads
logging.getLogger("PIL").setLevel(logging.INFO)

from . import criterions, models, scoring, tasks  # noqa: E402,F401  (fairseq registrations)
from .hub_interface import OFASys  # noqa: E402

print_full_help_on_fairseq_command_line()  # --help lists the task's and model's options

__all__ = ["Instruction", "InstructionError", "OFASys"]

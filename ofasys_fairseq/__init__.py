"""ofasys-fairseq: multimodal multitask learning from one-line instructions.

Importing the package (which ``--user-dir`` does) registers the task, model,
architectures, criterion and scorer with fairseq, and the checkpoint allow-list with torch.
"""
import logging

from .checkpoint_safety import allow_fairseq_checkpoint_globals
from .instruction import Instruction, InstructionError

allow_fairseq_checkpoint_globals()
# fairseq's entry points log at DEBUG; Pillow would then log every PNG chunk it reads
logging.getLogger("PIL").setLevel(logging.INFO)

from . import criterions, models, scoring, tasks  # noqa: E402,F401  (fairseq registrations)
from .hub_interface import OFASys  # noqa: E402

__all__ = ["Instruction", "InstructionError", "OFASys"]

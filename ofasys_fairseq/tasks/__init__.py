from .instruction_task import InstructionConfig, InstructionTask  # noqa: F401
from .multitask_task import MultitaskConfig, MultitaskTask  # noqa: F401

from .instruction_task import InstructionConfig, InstructionTask  # noqa: F401

from .instruction_ce import InstructionCrossEntropyCriterion  # noqa: F401 (registers it)

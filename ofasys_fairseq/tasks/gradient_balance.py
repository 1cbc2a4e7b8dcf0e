"""Each task's gradient on the shared parameters brought to one size (``--balance-gradients``).

Adam divides every parameter's step by the root of its running mean squared gradient. With
tasks taking turns, that mean is dominated by the tasks with the largest gradients, so a
task whose gradients are a few times smaller (measured with ``--log-task-gnorm``) moves the
shared model a few times less per batch than it would alone. Balancing scales each task's
loss by ``mean norm / its norm``, from a running mean of each task's measured gradient norm
(per unit of sample size, on the parameters the tasks share), so every task's batch asks the
same of the shared model, and the overall size stays what it was.
"""
from typing import Dict, List, Sequence

import torch
import torch.distributed as dist

#: weight of the running mean's past, per measurement of the task (about its last ten)
DECAY = 0.9


class GradientBalance:
    """Running gradient norms per task, and the loss scales they give.

    Args:
        names: the tasks, in the order of their indices.
    """

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.norms = torch.full((len(names),), float("nan"), dtype=torch.float64)
        self._pending = torch.zeros(2, len(names), dtype=torch.float64)  # sums, counts

    def scales(self) -> torch.Tensor:
        """Per task, the factor on its loss: the mean of the measured tasks' norms over its
        own (1 until a task is measured)."""
        measured = ~torch.isnan(self.norms)
        scales = torch.ones(len(self.names), dtype=torch.float64)
        if measured.any():
            scales[measured] = self.norms[measured].mean() / self.norms[measured]
        return scales

    def record(self, task: int, norm: float) -> None:
        """A batch of ``task`` had this unscaled gradient norm (used at ``step``)."""
        self._pending[0, task] += norm
        self._pending[1, task] += 1

    def step(self) -> None:
        """Fold this update's measurements into the running norms: summed over the
        data-parallel ranks first, so every rank keeps the same norms (and scales)."""
        pending, self._pending = self._pending, torch.zeros_like(self._pending)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            on = torch.device("cuda") if dist.get_backend() == "nccl" else pending.device
            reduced = pending.to(on)
            dist.all_reduce(reduced)
            pending = reduced.cpu()
        for task in torch.nonzero(pending[1]).flatten().tolist():
            norm = pending[0, task] / pending[1, task]
            past = self.norms[task]
            self.norms[task] = norm if torch.isnan(past) else DECAY * past + (1 - DECAY) * norm

    def state_dict(self) -> Dict[str, float]:
        return {name: float(norm) for name, norm in zip(self.names, self.norms)
                if not torch.isnan(norm)}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        for task, name in enumerate(self.names):
            if name in state:
                self.norms[task] = state[name]


def shared_gradient_norm(parameters: List[torch.nn.Parameter]) -> float:
    """The norm of the gradients these parameters hold."""
    squares = [p.grad.detach().float().pow(2).sum() for p in parameters if p.grad is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0

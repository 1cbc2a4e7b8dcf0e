"""The datasets of several tasks behind one index space, and their batch collation.

Index ``i`` belongs to the task whose ``offsets`` range holds it. Which indices go
together is decided by ``TaskSchedule`` (``data/task_schedule.py``); the collater
turns a batch into a sample according to what it holds:

* one task: that task's sample (a ``homogeneous`` batch, and every validation batch);
* several tasks, ``round`` mode: ``{"rounds": [one sample per task]}``, trained one
  after the other with gradients accumulated (``MultitaskTask.train_step``);
* several tasks, ``mixed`` mode: one sample whose rows come from several tasks.

Every sample carries ``task_ids`` and ``loss_weights`` per row.
"""
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from fairseq.data import FairseqDataset

from .features import collate_features
from .example_builder import Example
from .exit_guard import built_before_exit
from .instruction_dataset import InstructionDataset

BATCH_MODES = ("homogeneous", "mixed", "round")


class MultitaskDataset(FairseqDataset):
    """Args:
        datasets: one ``InstructionDataset`` per task.
        loss_weights: per task, the factor on its token losses.
        mode: how training batches combine tasks (one of ``BATCH_MODES``).
    """

    def __init__(self, datasets: Sequence[InstructionDataset], loss_weights: Sequence[float],
                 mode: str = "homogeneous"):
        if mode not in BATCH_MODES:
            raise ValueError(f"unknown batch mode {mode!r}; expected one of {BATCH_MODES}")
        self.datasets = list(datasets)
        self.loss_weights = torch.tensor(loss_weights, dtype=torch.float)
        self.mode = mode
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        self.sizes = np.concatenate([d.sizes for d in self.datasets])

    def task_of(self, index: int) -> int:
        return int(np.searchsorted(self.offsets, index, side="right") - 1)

    def __getitem__(self, index: int) -> Example:
        task = self.task_of(index)
        return self.datasets[task][index - int(self.offsets[task])]._replace(id=index)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index].max())

    def num_tokens_vec(self, indices):
        return self.sizes[indices].max(axis=1)

    def size(self, index: int):
        return tuple(int(s) for s in self.sizes[index])

    def set_epoch(self, epoch: int):
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return all(d.can_reuse_epoch_itr_across_epochs for d in self.datasets)

    # -- collation ------------------------------------------------------------
    @built_before_exit
    def collater(self, examples: Sequence[Example]) -> Dict[str, object]:
        if not examples:
            return {}
        by_task: Dict[int, List[Example]] = {}
        for example in examples:
            by_task.setdefault(self.task_of(example.id), []).append(example)
        if len(by_task) == 1:
            [(task, rows)] = by_task.items()
            return self._task_sample(task, rows)
        if self.mode == "round":
            return {"rounds": [self._task_sample(t, rows) for t, rows in sorted(by_task.items())]}
        return self._mixed_sample(by_task)

    def _task_sample(self, task: int, examples: List[Example]) -> Dict[str, object]:
        sample = self.datasets[task].collater(examples)
        sample["task_index"] = task
        sample["task_ids"] = torch.full((len(examples),), task, dtype=torch.long)
        sample["loss_weights"] = self.loss_weights[sample["task_ids"]]
        return sample

    def _mixed_sample(self, by_task: Dict[int, List[Example]]) -> Dict[str, object]:
        """One training sample over rows of several tasks: token tensors padded to the
        widest task, closed-set positions moved to the merged target, feature inputs
        placed by row (rows of text-only tasks get none)."""
        parts = [self._task_sample(t, rows) for t, rows in by_task.items()]
        pad = self.datasets[0].dictionary.pad()
        target = _cat_padded([p["target"] for p in parts], pad)
        sample = {
            "id": torch.cat([p["id"] for p in parts]),
            "nsentences": sum(p["nsentences"] for p in parts),
            "ntokens": sum(p["ntokens"] for p in parts),
            "net_input": {
                "src_tokens": _cat_padded([p["net_input"]["src_tokens"] for p in parts], pad),
                "src_lengths": torch.cat([p["net_input"]["src_lengths"] for p in parts]),
                "prev_output_tokens": _cat_padded(
                    [p["net_input"]["prev_output_tokens"] for p in parts], pad),
            },
            "target": target,
            "task_ids": torch.cat([p["task_ids"] for p in parts]),
            "loss_weights": torch.cat([p["loss_weights"] for p in parts]),
        }
        features = collate_features([e.features for rows in by_task.values() for e in rows])
        if features:
            sample["net_input"]["features"] = features
        steps = _merged_closed_set_steps(parts, target.size(1))
        if steps is not None:
            sample["closed_set_steps"] = steps
        return sample


def _cat_padded(tensors: Sequence[torch.Tensor], pad: int) -> torch.Tensor:
    width = max(t.size(1) for t in tensors)
    return torch.cat([F.pad(t, (0, width - t.size(1)), value=pad) for t in tensors])


def _merged_closed_set_steps(parts: Sequence[Dict[str, object]], width: int):
    """Closed-set steps index the flattened ``B x T`` target: re-index them for the rows'
    places in the merged target."""
    positions, allowed, first_row = [], [], 0
    for part in parts:
        steps = part.get("closed_set_steps")
        if steps is not None:
            old_width = part["target"].size(1)
            rows = torch.div(steps["positions"], old_width, rounding_mode="floor")
            positions.append((rows + first_row) * width + steps["positions"] % old_width)
            allowed.append(steps["allowed"])
        first_row += part["nsentences"]
    if not positions:
        return None
    k = max(a.size(1) for a in allowed)
    return {"positions": torch.cat(positions),
            "allowed": torch.cat([F.pad(a, (0, k - a.size(1)), value=-1) for a in allowed])}

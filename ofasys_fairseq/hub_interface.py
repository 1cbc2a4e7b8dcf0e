"""Python inference: ``OFASys.from_pretrained(path).inference(instruction, data)``."""
import os
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from fairseq import checkpoint_utils, utils
from tqdm import tqdm

from .checkpoint_safety import check_checkpoint_is_safe
from .data.table import InMemoryTable, Table, open_table
from .modalities import get_modality
from .plan import TaskPlan


class OFASys:
    """A trained model and its task (tokenizer, dictionary, labels, instruction).

    Args:
        task: the ``InstructionTask`` restored from the checkpoint.
        model: the trained ``OFASysModel``.
    """

    def __init__(self, task, model: torch.nn.Module):
        self.task = task
        self.model = model.eval()

    @classmethod
    def from_pretrained(cls, checkpoint_path: str, device: str = "cpu",
                        **task_options) -> "OFASys":
        """Load a checkpoint written by ``fairseq-train``; it is the only file needed.

        Args:
            checkpoint_path: the checkpoint.
            device: where the model runs (``"cpu"``, ``"cuda"``).
            task_options: task options that do not change the model, by their names in
                the task's config (``audio_vocoder="griffin_lim"``).
        """
        check_checkpoint_is_safe(checkpoint_path)
        models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [checkpoint_path], arg_overrides=task_options or None)
        return cls(task, models[0].to(device))

    @property
    def instructions(self) -> Dict[str, str]:
        """The trained instruction of each task (one, named ``instruction``, for a
        single-task model): the defaults for ``inference``."""
        if hasattr(self.task, "members"):
            return {name: m.plan.text for name, m in zip(self.task.task_names, self.task.members)}
        return {"instruction": self.task.plan.text}

    def plan(self, instruction: Optional[str] = None, task: Optional[str] = None) -> TaskPlan:
        """What ``inference`` decodes: ``instruction`` parsed, or the trained one (of
        ``task`` for a multitask model)."""
        if instruction is None:
            return self._trained_task(task).plan
        return TaskPlan.parse(instruction)

    def _trained_task(self, name: Optional[str]):
        """The task whose instruction and labels ``inference`` uses."""
        if not hasattr(self.task, "members"):
            if name is not None:
                raise ValueError(f"task={name!r}: this model was trained on one task")
            return self.task
        if name is None:
            raise ValueError(f"a multitask model: choose one of its tasks with task= "
                             f"({', '.join(self.task.task_names)})")
        return self.task.member(name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def inference(self, instruction: Optional[str] = None,
                  data: Union[Sequence[Mapping[str, object]], str, os.PathLike, Table] = (),
                  beam: int = 5,
                  max_len: Optional[int] = None,
                  batch_size: int = 32,
                  max_tokens: int = 8192,
                  labels: Optional[Dict[str, Sequence[str]]] = None,
                  task: Optional[str] = None) -> List[Dict[str, object]]:
        """Decode the target of each row.

        Args:
            instruction: a (possibly new, zero-shot) instruction; default: the trained one.
            data: rows as dicts of column -> value (the target column is not needed),
                or the path of a data file (``.jsonl``, ``.tsv``, ``.csv``, as for
                training; relative file paths in its cells are read from its directory,
                and errors name its lines), or that file's ``Table``.
            beam: beam size.
            max_len: longest output, not counting the forced ``no_loss`` prefix: tokens
                (default 64), or decoder steps of a continuous output (default: what the
                decoder's positions hold).
            batch_size: most rows decoded together (at beam 5, 32 rows decode faster
                per row on a CPU than 128, whose 640 hypotheses outgrow its caches).
            max_tokens: most input tokens (padded, as ``--max-tokens`` counts them)
                decoded together; a longer row is decoded alone. Rows are batched in
                order of length and returned in input order, with a progress bar on a
                terminal when there is more than one batch.
            labels: label sets for ``closed_set`` columns the checkpoint has none for.
            task: for a multitask model, the task whose instruction (the default) and
                labels to use.
        Returns:
            One dict per row, keyed by the target column, holding the target's modality's
            output: a ``str`` for TEXT (a label for closed sets), ``[x0, y0, x1, y1]``
            pixels of the original image for BOX (None if the model produced no box), a
            list of rows of cell strings for STRUCT, a ``Sound`` (``waveform``,
            ``sample_rate``, ``log_mel``; ``.save(path)``) for AUDIO.
            Relative file paths in cells of ``data`` rows are read from the current
            directory.
        """
        trained = self._trained_task(task)
        table = _table_of(data)
        plan = self.plan(instruction, task).bind_columns(table.columns)
        target = get_modality(plan.target.modality)
        for column, values in (labels or {}).items():
            trained.add_labels(column, [target.label_text(v, plan.target) for v in values])
        dataset = trained.dataset_for(table, plan, with_target=False)
        results: List[Dict[str, object]] = [{} for _ in range(len(dataset))]
        indices = dataset.ordered_indices()
        longest = int(dataset.num_tokens_vec(indices).max()) if len(indices) else 0
        batches = dataset.batch_by_size(indices, max_tokens=max(max_tokens, longest),
                                        max_sentences=batch_size)
        with tqdm(total=len(dataset), desc="inference", unit="row",
                  disable=None if len(batches) > 1 else True) as progress:
            for batch_indices in batches:
                batch = dataset.collater([dataset[int(i)] for i in batch_indices])
                batch = utils.apply_to_sample(lambda t: t.to(self.device), batch)
                predictions = self.task.predictions(self.model, batch, None, max_len, beam)
                for row, (sample_id, prediction) in enumerate(zip(batch["id"].tolist(),
                                                                  predictions)):
                    results[sample_id] = {
                        plan.target.column: self.task.output(batch, row, prediction)}
                progress.update(len(batch_indices))
        return results


def _table_of(data) -> "Table | InMemoryTable":
    """``inference``'s rows as a table: a data file's (by path or already read) or given."""
    if isinstance(data, (str, os.PathLike)):
        return open_table(os.fspath(data))
    if hasattr(data, "line_number"):  # a Table or TarShard already open
        return data
    return InMemoryTable(data)

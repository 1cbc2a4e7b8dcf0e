"""The instruction criterion: label-smoothed cross entropy for token targets, the
target modality's own loss term for continuous ones.

* ``no_loss`` decoder tokens are padding in ``sample["target"]``: no loss.
* ``closed_set`` targets are scored against the label set: at each step the
  softmax runs over the tokens the label trie allows there (smoothing spread
  over those tokens only). The allowed ids come per position from the dataset
  (``closed_set_steps``), so no dense per-sample vocabulary mask is built.
* A continuous target (``target_frames``: frames such as TTS mel frames) is scored by its
  modality's ``loss`` on its output head's predictions, per frame, with the weights of
  ``--frame-l1-weight``, ``--frame-mse-weight`` and ``--frame-stop-weight``; ``ntokens``
  counts frames.
* ``--ctc-weight w`` adds w x CTC (Graves et al. 2006) of a token target aligned to the
  encoder states of the row's inputs that follow a text in time (AUDIO: the modality's
  ``ctc_alignable``), through the shared output projection, blank = ``<s>`` (never a
  target). Rows without such inputs add nothing; the CTC sum is logged as ``ctc_loss``.
* Multitask samples carry ``task_ids`` and ``loss_weights`` per row: a row's token
  losses are multiplied by its task's loss weight (the normalizer, the number of
  target tokens, is unchanged, so a weight of 2 doubles that task's gradient), and
  each task's own (unweighted) loss, tokens and samples are logged.
"""
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass

from ..modalities import get_modality
from ..modalities.frames import FrameLossWeights


@dataclass
class InstructionCrossEntropyConfig(FairseqDataclass):
    label_smoothing: float = field(
        default=0.1, metadata={"help": "label smoothing epsilon (0 disables it)"})
    ctc_weight: float = field(default=0.0, metadata={
        "help": "weight of an auxiliary CTC loss aligning token targets to the encoder "
                "states of speech inputs (0: none)"})
    frame_l1_weight: float = field(default=1.0, metadata={
        "help": "weight of the mean absolute error of continuous target frames (TTS mels)"})
    frame_mse_weight: float = field(default=1.0, metadata={
        "help": "weight of the mean squared error of continuous target frames"})
    frame_stop_weight: float = field(default=1.0, metadata={
        "help": "weight of the binary cross entropy of continuous targets' stop flag"})


TASK_STAT = "_task_{}:{}"  # hidden per-task sums: _task_loss:nli, _task_ntokens:nli, ...
TASK_STATS = ("loss", "ntokens", "nsentences")


def closed_set_loss(logits: torch.Tensor, gold: torch.Tensor, allowed: torch.Tensor,
                    epsilon: float):
    """Label-smoothed NLL with the softmax restricted to ``allowed`` ids, per position.

    Args:
        logits: N x V logits at the closed-set positions.
        gold: N gold token ids.
        allowed: N x K allowed ids per position, padded with -1.
        epsilon: label smoothing, spread over the K_i allowed tokens of each position.
    Returns:
        (loss, nll_loss), each of N values.
    """
    valid = allowed.ge(0)
    scores = logits.gather(1, allowed.clamp(min=0)).masked_fill(~valid, -math.inf)
    log_norm = torch.logsumexp(scores, dim=1)
    nll = log_norm - logits.gather(1, gold.unsqueeze(1)).squeeze(1)
    smooth = (log_norm.unsqueeze(1) - scores).masked_fill(~valid, 0.0).sum(1)
    num_allowed = valid.sum(1)
    eps_i = epsilon / (num_allowed - 1).clamp(min=1)
    eps_i = torch.where(num_allowed > 1, eps_i, torch.zeros_like(eps_i))
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    # a single allowed token is certain: nll and smooth are both 0 there
    return loss, nll


@register_criterion("instruction_ce", dataclass=InstructionCrossEntropyConfig)
class InstructionCrossEntropyCriterion(FairseqCriterion):
    def __init__(self, task, label_smoothing: float = 0.1, ctc_weight: float = 0.0,
                 frame_l1_weight: float = 1.0, frame_mse_weight: float = 1.0,
                 frame_stop_weight: float = 1.0):
        super().__init__(task)
        weights = {"--ctc-weight": ctc_weight, "--frame-l1-weight": frame_l1_weight,
                   "--frame-mse-weight": frame_mse_weight, "--frame-stop-weight": frame_stop_weight}
        for option, weight in weights.items():
            if weight < 0:
                raise ValueError(f"{option} must be >= 0, got {weight}")
        self.eps, self.ctc_weight = label_smoothing, ctc_weight
        self.frame_weights = FrameLossWeights(frame_l1_weight, frame_mse_weight,
                                              frame_stop_weight)

    def forward(self, model, sample, reduce: bool = True):
        features, extra = model(**sample["net_input"], features_only=True)
        if "target_frames" in sample:
            losses, sample_row = self._frame_losses(model, sample, features)
            nll_losses = losses
        else:
            losses, nll_losses, sample_row = self._token_losses(model, sample, features)
        weights = sample.get("loss_weights")
        loss = (losses if weights is None else losses * weights[sample_row]).sum()
        sample_size = sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_losses.sum().data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        if self.ctc_weight > 0 and "target" in sample:
            ctc = self._ctc_loss(model, sample, extra["encoder_out"], weights)
            loss = loss + self.ctc_weight * ctc
            logging_output.update(loss=loss.data, ctc_loss=ctc.data)
        if "task_ids" in sample:
            logging_output.update(self._task_stats(sample["task_ids"], sample_row,
                                                   losses.detach()))
        return loss, sample_size, logging_output

    def _frame_losses(self, model, sample, features):
        """Per-frame losses of a continuous target, by its modality, and each frame's row."""
        target, slot = sample["target_frames"], sample["target_slot"]
        states = features.reshape(-1, features.size(-1))[target["positions"]]
        predicted = model.decoder.output_heads[slot.modality](states, target["rows"])
        return get_modality(slot.modality).loss(predicted, target["frames"], target["stop"],
                                                slot, self.frame_weights), target["rows"]

    def _token_losses(self, model, sample, features):
        """Per-token losses and NLL of the scored target tokens, and each token's row."""
        width = sample["target"].size(1)
        target = sample["target"].reshape(-1)
        # Project to the vocabulary only where there is a loss: no_loss prefixes are
        # often most of the decoder sequence (see benchmarks/criterion.py).
        scored = target.ne(self.padding_idx).nonzero(as_tuple=True)[0]
        logits = model.decoder.output_layer(
            features.reshape(-1, features.size(-1))[scored]).float()
        gold, sample_row = target[scored], torch.div(scored, width, rounding_mode="floor")
        steps = sample.get("closed_set_steps")
        if steps is None:  # all free text: no row selection (it would copy N x V logits)
            losses, nll_losses = label_smoothed_nll_loss(
                F.log_softmax(logits, dim=-1), gold, self.eps, ignore_index=None, reduce=False)
            return losses, nll_losses, sample_row

        row_of = torch.full_like(target, -1)
        row_of[scored] = torch.arange(len(scored), device=target.device)
        rows = row_of[steps["positions"]]
        if bool((rows < 0).any()):  # -1 would silently score another position
            raise ValueError("closed_set_steps name a position with no target token")
        losses, nll_losses = logits.new_zeros(len(gold)), logits.new_zeros(len(gold))
        losses[rows], nll_losses[rows] = closed_set_loss(logits[rows], gold[rows],
                                                         steps["allowed"], self.eps)
        open_rows = torch.ones_like(gold, dtype=torch.bool)
        open_rows[rows] = False
        if open_rows.any():
            lprobs = F.log_softmax(logits[open_rows], dim=-1)
            losses[open_rows], nll_losses[open_rows] = label_smoothed_nll_loss(
                lprobs, gold[open_rows], self.eps, ignore_index=None, reduce=False)
        return losses, nll_losses, sample_row

    def _ctc_loss(self, model, sample, encoder_out, weights) -> torch.Tensor:
        """Summed CTC of each row's target tokens over its CTC-alignable encoder states
        (rows without any add nothing), weighted by the row's task loss weight."""
        masks = encoder_out.get("ctc_mask") or []
        states = encoder_out["encoder_out"][0]  # T x B x C
        if not masks or not bool(masks[0].any()):
            return states.new_zeros(())
        mask = masks[0]
        rows = mask.any(1).nonzero(as_tuple=True)[0]
        mask = mask[rows]
        lengths = mask.sum(1)
        # each row's aligned positions first, in order (their block may follow another's)
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :int(lengths.max())]
        x = states.transpose(0, 1)[rows].gather(1, order[..., None].expand(-1, -1, states.size(-1)))
        log_probs = F.log_softmax(model.decoder.output_layer(x).float(), dim=-1)
        targets = sample["target"][rows]
        dictionary = self.task.target_dictionary
        scored = targets.ne(self.padding_idx) & targets.ne(dictionary.eos())
        losses = F.ctc_loss(log_probs.transpose(0, 1), targets[scored], lengths, scored.sum(1),
                            blank=dictionary.bos(), reduction="none", zero_infinity=True)
        if weights is not None:
            losses = losses * weights[rows]
        return losses.sum()

    def _task_stats(self, task_ids: torch.Tensor, sample_row: torch.Tensor,
                    losses: torch.Tensor):
        """Each task's summed loss, target tokens and samples in this batch; every task of
        the run has its keys (zeros if absent), as data-parallel sums need the same keys
        on every rank."""
        names = self.task.task_names
        position_task = task_ids[sample_row]
        stats = {"loss": losses.new_zeros(len(names)).index_add_(0, position_task, losses),
                 "ntokens": torch.bincount(position_task, minlength=len(names)),
                 "nsentences": torch.bincount(task_ids, minlength=len(names))}
        return {TASK_STAT.format(stat, name): value for stat, values in stats.items()
                for name, value in zip(names, values.tolist())}

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss = sum(log.get("loss", 0) for log in logging_outputs)
        nll = sum(log.get("nll_loss", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        metrics.log_scalar("loss", loss / max(sample_size, 1) / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", nll / max(ntokens, 1) / math.log(2), ntokens, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
        if any("ctc_loss" in log for log in logging_outputs):
            ctc = sum(log.get("ctc_loss", 0) for log in logging_outputs)
            metrics.log_scalar("ctc_loss", ctc / max(sample_size, 1) / math.log(2), sample_size,
                               round=3)
        for name in _task_names(logging_outputs):
            def total(stat):
                return sum(log.get(TASK_STAT.format(stat, name), 0) for log in logging_outputs)

            if total("ntokens") > 0:  # the task was trained (or validated) here
                metrics.log_scalar(f"{name}_loss", total("loss") / total("ntokens") / math.log(2),
                                   total("ntokens"), round=3)
            metrics.log_scalar_sum(f"{name}_tokens", int(total("ntokens")))
            metrics.log_scalar_sum(f"{name}_samples", int(total("nsentences")))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def _task_names(logging_outputs) -> list:
    prefix = TASK_STAT.format("ntokens", "")
    return [key[len(prefix):] for key in (logging_outputs[0] if logging_outputs else ())
            if key.startswith(prefix)]

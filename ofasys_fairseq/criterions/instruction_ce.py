"""Label-smoothed cross entropy for instruction targets.

* ``no_loss`` decoder tokens are padding in ``sample["target"]``: no loss.
* ``closed_set`` targets are scored against the label set: at each step the
  softmax runs over the tokens the label trie allows there (smoothing spread
  over those tokens only). The allowed ids come per position from the dataset
  (``closed_set_steps``), so no dense per-sample vocabulary mask is built.
"""
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass


@dataclass
class InstructionCrossEntropyConfig(FairseqDataclass):
    label_smoothing: float = field(
        default=0.1, metadata={"help": "label smoothing epsilon (0 disables it)"})


def closed_set_loss(logits: torch.Tensor, gold: torch.Tensor, allowed: torch.Tensor,
                    epsilon: float):
    """Label-smoothed NLL with the softmax restricted to ``allowed`` ids.

    Args:
        logits: N x V logits at the closed-set positions.
        gold: N gold token ids.
        allowed: N x K allowed ids per position, padded with -1.
        epsilon: label smoothing, spread over the K_i allowed tokens of each position.
    Returns:
        (loss, nll_loss), summed over positions.
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
    return loss.sum(), nll.sum()


@register_criterion("instruction_ce", dataclass=InstructionCrossEntropyConfig)
class InstructionCrossEntropyCriterion(FairseqCriterion):
    def __init__(self, task, label_smoothing: float = 0.1):
        super().__init__(task)
        self.eps = label_smoothing

    def forward(self, model, sample, reduce: bool = True):
        target = sample["target"].reshape(-1)
        # Project to the vocabulary only where there is a loss: no_loss prefixes are
        # often most of the decoder sequence (see benchmarks/criterion.py).
        features, _ = model(**sample["net_input"], features_only=True)
        scored = target.ne(self.padding_idx).nonzero(as_tuple=True)[0]
        logits = model.decoder.output_layer(
            features.reshape(-1, features.size(-1))[scored]).float()
        gold = target[scored]
        open_rows = torch.ones_like(gold, dtype=torch.bool)
        loss = nll_loss = logits.new_zeros(())

        steps = sample.get("closed_set_steps")
        if steps is not None:
            row_of = torch.full_like(target, -1)
            row_of[scored] = torch.arange(len(scored), device=target.device)
            rows = row_of[steps["positions"]]
            if bool((rows < 0).any()):  # -1 would silently score another position
                raise ValueError("closed_set_steps name a position with no target token")
            closed_loss, closed_nll = closed_set_loss(logits[rows], gold[rows],
                                                      steps["allowed"], self.eps)
            loss, nll_loss = loss + closed_loss, nll_loss + closed_nll
            open_rows[rows] = False

        if open_rows.any():
            lprobs = F.log_softmax(logits[open_rows], dim=-1)
            open_loss, open_nll = label_smoothed_nll_loss(
                lprobs, gold[open_rows], self.eps, ignore_index=None, reduce=True)
            loss, nll_loss = loss + open_loss, nll_loss + open_nll

        sample_size = sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss = sum(log.get("loss", 0) for log in logging_outputs)
        nll = sum(log.get("nll_loss", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        metrics.log_scalar("loss", loss / max(sample_size, 1) / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", nll / max(ntokens, 1) / math.log(2), ntokens, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

"""fairseq's SequenceGenerator with the forced prefix scored 0 and, where a target's
modality constrains it, beam search over what the constraint allows, renormalized.

A target with nothing to constrain decodes through the search fairseq's options chose
(beam, sampling, diverse beam, ...), exactly as fairseq's own models do. The forced
prefix (a ``no_loss`` context) goes through fairseq's ``prefix_tokens``.

Our models are trained the way they are decoded: ``closed_set`` targets with a softmax
restricted to what the label trie allows, ``no_loss`` prefixes not at all. Full-vocabulary
scores of such steps are not comparable across steps, so beam search would rank labels by
noise. Renormalizing over the allowed tokens scores a forced prefix token 0 and a label by
its restricted probability, exactly the quantity the criterion trained. The constraint
answers for all hypotheses of a step at once, as a tensor mask (``TokenConstraint
.allowed_mask``): no Python call per hypothesis.

Plugged in through ``FairseqTask.build_generator(seq_gen_cls=...)``.
"""
from typing import List, Optional, Sequence

import torch
from fairseq.search import BeamSearch
from fairseq.sequence_generator import SequenceGenerator


class Restriction:
    """One batch's constraint over its hypotheses, which start after each row's forced
    prefix.

    Args:
        constraint: the target modality's ``TokenConstraint``.
        prefix_lengths: each row's forced prefix length, in the batch's row order.
        sample_ids: each row's sample id (fairseq's search names rows by it).
    """

    def __init__(self, constraint, prefix_lengths: Sequence[int], sample_ids: torch.Tensor):
        self.constraint = constraint
        self.shortest_prefix = min(prefix_lengths)
        self.sorted_ids, self.row_of_sorted = sample_ids.sort()
        self.prefix_lengths = torch.tensor(prefix_lengths, device=sample_ids.device)

    def apply(self, step: int, lprobs: torch.Tensor, tokens: torch.Tensor,
              batch_ids: torch.Tensor) -> torch.Tensor:
        """``lprobs`` (hypotheses x vocabulary) of hypotheses past their prefix restricted
        to the allowed tokens and renormalized over them; ``tokens``: the hypotheses'
        tokens so far (the decoder's start symbol first), ``batch_ids``: the sample id of
        each sentence still decoded."""
        if step < self.shortest_prefix:  # every row is inside its forced prefix
            return lprobs
        rows = self.row_of_sorted[torch.searchsorted(self.sorted_ids, batch_ids)]
        prefix = self.prefix_lengths[rows].repeat_interleave(len(lprobs) // len(batch_ids))
        lengths = step - prefix  # target tokens so far; < 0: inside the forced prefix
        width = max(1, step - self.shortest_prefix)
        columns = (prefix.unsqueeze(1) + 1 + torch.arange(width, device=tokens.device))
        generated = tokens.gather(1, columns.clamp_(max=step))
        allowed = self.constraint.allowed_mask(generated, lengths.clamp(min=0), lprobs.size(1))
        allowed = allowed | (lengths < 0).unsqueeze(1)  # fairseq forces the prefix itself
        restricted = lprobs.masked_fill(~allowed, float("-inf"))
        log_norm = restricted.logsumexp(-1, keepdim=True)
        # a row with nothing allowed (e.g. eos before --min-len) stays at -inf
        return restricted - log_norm.masked_fill(torch.isinf(log_norm), 0.0)


class RestrictedBeamSearch(BeamSearch):
    """fairseq's beam search over what a ``Restriction`` allows."""

    def __init__(self, tgt_dict, restriction: Restriction):
        super().__init__(tgt_dict)
        self.restriction = restriction
        self.exhausted: Optional[torch.Tensor] = None

    def step(self, step, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None):
        bsz, beam_size, vocab_size = lprobs.size()
        lprobs = self.restriction.apply(step, lprobs.view(-1, vocab_size), prev_output_tokens,
                                        original_batch_idxs).view(bsz, beam_size, vocab_size)
        cand_scores, cand_indices, cand_beams = super().step(step, lprobs, scores)
        # Sentences with no finite continuation but eos have run out of labels (beam
        # wider than the label set): RestrictedSequenceGenerator stops them now rather
        # than at max_len.
        self.exhausted = ~(torch.isfinite(cand_scores) & cand_indices.ne(self.eos)).any(dim=1)
        return cand_scores, cand_indices, cand_beams


class RestrictedSequenceGenerator(SequenceGenerator):
    """SequenceGenerator whose forced prefix tokens score 0 and which decodes a batch with
    a ``Restriction`` by ``RestrictedBeamSearch`` (see module doc)."""

    def __init__(self, models, tgt_dict, search_strategy=None, **kwargs):
        super().__init__(models, tgt_dict, search_strategy=search_strategy, **kwargs)
        self.tgt_dict = tgt_dict
        self.chosen_search = self.search

    def decode(self, models, sample, prefix_tokens: Optional[torch.Tensor],
               restriction: Optional[Restriction],
               constraints: Optional[torch.Tensor] = None) -> List[List[dict]]:
        """``generate`` (``constraints``: fairseq's lexical constraints, ``--constraints``),
        within ``restriction`` where one is given."""
        if restriction is not None:
            if type(self.chosen_search) is not BeamSearch:
                raise ValueError(
                    f"this target is decoded within a constraint, by beam search; "
                    f"{type(self.chosen_search).__name__} (--sampling, --diverse-beam-groups, "
                    f"...) decodes free targets only")
            self.search = RestrictedBeamSearch(self.tgt_dict, restriction)
        for model in self.model.models:  # this search's beam (another may have set its own)
            if hasattr(model, "set_beam_size"):
                model.set_beam_size(self.beam_size)
        try:
            return self.generate(models, sample, prefix_tokens=prefix_tokens,
                                 constraints=constraints)
        finally:
            self.search = self.chosen_search

    def _prefix_tokens(self, step, lprobs, scores, tokens, prefix_tokens, beam_size):
        lprobs, tokens, scores = super()._prefix_tokens(step, lprobs, scores, tokens,
                                                        prefix_tokens, beam_size)
        forced = prefix_tokens[:, step].repeat_interleave(beam_size)
        rows = forced.ne(self.pad).nonzero().squeeze(1)
        lprobs[rows, forced[rows]] = 0.0  # the only token allowed: renormalized, log 1
        return lprobs, tokens, scores

    def is_finished(self, step, unfin_idx, max_len, finalized_sent_len, beam_size):
        exhausted = getattr(self.search, "exhausted", None)
        if exhausted is not None and bool(exhausted[unfin_idx]):
            return True
        return super().is_finished(step, unfin_idx, max_len, finalized_sent_len, beam_size)

"""fairseq's beam search over allowed tokens, renormalized over those tokens.

fairseq's ``PrefixConstrainedBeamSearch`` masks disallowed tokens but keeps the
full-vocabulary log-probabilities of the allowed ones. Our models are trained the way
they are decoded: ``closed_set`` targets with a softmax restricted to what the label trie
allows, ``no_loss`` prefixes not at all. Full-vocabulary scores of such steps are not
comparable across steps, so beam search would rank labels by noise. Renormalizing over
the allowed tokens scores a forced prefix token 0 and a label by its restricted
probability, exactly the quantity the criterion trained.

Plugged in through ``FairseqTask.build_generator(seq_gen_cls=...)``.
"""
import torch
from fairseq.search import BeamSearch, PrefixConstrainedBeamSearch
from fairseq.sequence_generator import SequenceGenerator


class RenormalizedPrefixConstrainedBeamSearch(PrefixConstrainedBeamSearch):
    def apply_mask(self, x, prev_output_tokens, original_batch_idxs):
        mask = super().apply_mask(x, prev_output_tokens, original_batch_idxs)
        log_norm = (x + mask).logsumexp(-1, keepdim=True)
        # a row with nothing allowed (e.g. eos before --min-len) stays at -inf
        return mask - log_norm.masked_fill(torch.isinf(log_norm), 0.0)

    def step(self, step, lprobs, scores, prev_output_tokens, original_batch_idxs):
        """``PrefixConstrainedBeamSearch.step`` proposes only ``beam_size`` candidates,
        so a finished (eos) candidate must also fill an active beam, which then goes on
        emitting eos and is finalized again: the n-best list fills with copies of a
        label (``label </s> </s>``) that push other labels out. Propose ``2 x beam``
        candidates like fairseq's ``BeamSearch``: the active beams are always chosen
        among non-eos candidates and a finished hypothesis is never continued."""
        bsz, beam_size, vocab_size = lprobs.size()
        lprobs = lprobs + self.apply_mask(
            lprobs.view(bsz * beam_size, 1, vocab_size), prev_output_tokens,
            original_batch_idxs).view(bsz, beam_size, vocab_size)
        cand_scores, cand_indices, cand_beams = BeamSearch.step(self, step, lprobs, scores)
        # Sentences with no finite continuation but eos have run out of labels (beam
        # wider than the label set): RestrictedSequenceGenerator stops them now rather
        # than at max_len.
        self.exhausted = ~(torch.isfinite(cand_scores) & cand_indices.ne(self.eos)).any(dim=1)
        return cand_scores, cand_indices, cand_beams


class RestrictedSequenceGenerator(SequenceGenerator):
    """SequenceGenerator whose prefix-constrained search renormalizes (see module doc)."""

    def __init__(self, models, tgt_dict, search_strategy=None, **kwargs):
        if type(search_strategy) is PrefixConstrainedBeamSearch:
            search_strategy = RenormalizedPrefixConstrainedBeamSearch(
                tgt_dict, search_strategy.prefix_allowed_tokens_fn)
        super().__init__(models, tgt_dict, search_strategy=search_strategy, **kwargs)

    def is_finished(self, step, unfin_idx, max_len, finalized_sent_len, beam_size):
        exhausted = getattr(self.search, "exhausted", None)
        if exhausted is not None and bool(exhausted[unfin_idx]):
            return True
        return super().is_finished(step, unfin_idx, max_len, finalized_sent_len, beam_size)

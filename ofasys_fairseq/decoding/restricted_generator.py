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
from fairseq.search import PrefixConstrainedBeamSearch
from fairseq.sequence_generator import SequenceGenerator


class RenormalizedPrefixConstrainedBeamSearch(PrefixConstrainedBeamSearch):
    def apply_mask(self, x, prev_output_tokens, original_batch_idxs):
        mask = super().apply_mask(x, prev_output_tokens, original_batch_idxs)
        log_norm = (x + mask).logsumexp(-1, keepdim=True)
        # A beam already past eos only repeats eos; leaving its score unnormalized
        # keeps such duplicates below the finished hypothesis they copy.
        finished = prev_output_tokens[:, -1].eq(self.eos) & (prev_output_tokens.size(1) > 1)
        keep = finished.view(-1, 1, 1) | torch.isinf(log_norm)
        return mask - log_norm.masked_fill(keep, 0.0)


class RestrictedSequenceGenerator(SequenceGenerator):
    """SequenceGenerator whose prefix-constrained search renormalizes (see module doc)."""

    def __init__(self, models, tgt_dict, search_strategy=None, **kwargs):
        if type(search_strategy) is PrefixConstrainedBeamSearch:
            search_strategy = RenormalizedPrefixConstrainedBeamSearch(
                tgt_dict, search_strategy.prefix_allowed_tokens_fn)
        super().__init__(models, tgt_dict, search_strategy=search_strategy, **kwargs)

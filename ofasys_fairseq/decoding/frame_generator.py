"""Greedy autoregressive generation of a continuous target: each generated frame is the
decoder's next input (through the output head's pre-net), until the stop flag.

The decoder's input at position 0 is end of sentence, then each row's forced prefix
(literal text and ``no_loss`` slots), then frames; the state at the prefix's last
position predicts the first frame. Rows with prefixes of different lengths decode in
one batch: a row reads its prefix while it lasts, frames after.
"""
from typing import List, NamedTuple

import torch

STOP_THRESHOLD = 0.5  # the stop flag's probability that ends a row


class FrameGenerator(NamedTuple):
    """What fairseq-generate is given for a continuous target: the task's
    ``inference_step`` runs the target modality's generator with this limit and writes
    each row's output to a file (fairseq-generate prints the file's path).

    Args:
        max_frames: the most decoder steps per row (``--max-len-b``).
        eos: end of sentence (fairseq strips it from what it prints).
    """

    max_frames: int
    eos: int

    @property
    def symbols_to_strip_from_output(self):
        return {self.eos}


@torch.no_grad()
def generate_frames(model, sample, modality: str, max_frames: int,
                    stop_threshold: float = STOP_THRESHOLD) -> List[torch.Tensor]:
    """Each row's frames (``n x F``, 1 <= n <= ``max_frames``).

    Args:
        model: an ``OFASysModel`` with an output head for ``modality``.
        sample: a collated batch (``net_input``, ``decoder_prefix``).
        modality: the target's modality (its head reads and writes the frames).
        max_frames: the most frames a row gets (at most what the decoder's positions leave
            after the longest prefix).
        stop_threshold: a row ends once its stop probability exceeds this.
    """
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"],
                                features=net_input.get("features"))
    head = model.decoder.output_heads[modality]
    dictionary = model.decoder.dictionary
    tokens = net_input["src_tokens"].new_full((net_input["src_tokens"].size(0), 1),
                                              dictionary.eos())
    batch, device = tokens.size(0), tokens.device
    prefix = sample.get("decoder_prefix")
    if prefix is None:
        prefix = tokens.new_full((batch, 1), dictionary.pad())
    prefix_lengths = prefix.ne(dictionary.pad()).sum(1)
    longest_prefix = int(prefix_lengths.max())
    # the last step reads eos, the prefix and all frames but the last
    max_frames = min(max_frames, model.decoder.max_positions() - longest_prefix)
    if max_frames < 1:
        raise ValueError(f"a forced prefix of {longest_prefix} tokens leaves no decoder "
                         f"position for a frame (max positions "
                         f"{model.decoder.max_positions()})")
    placeholder = tokens.new_full((batch,), dictionary.unk())  # a frame's position
    frame_dim = head.frame_projection.out_features
    inputs = torch.zeros(batch, 1, frame_dim, device=device)
    is_frame = torch.zeros(batch, 1, dtype=torch.bool, device=device)
    outputs: List[List[torch.Tensor]] = [[] for _ in range(batch)]
    finished = [False] * batch
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    state = {}
    for position in range(longest_prefix + max_frames):
        states, _ = model.decoder(tokens, encoder_out=encoder_out, incremental_state=state,
                                  features_only=True,
                                  decoder_frames={"modality": modality, "frames": inputs,
                                                  "mask": is_frame})
        predicted = head(states[:, -1])
        emitting = (position >= prefix_lengths) & ~done
        stops = (torch.sigmoid(predicted.stop_logits.float()) > stop_threshold).tolist()
        for row in emitting.nonzero().flatten().tolist():  # (one device sync per step)
            outputs[row].append(predicted.frames[row].float())
            finished[row] = stops[row] or len(outputs[row]) == max_frames
        if all(finished):
            break
        done = torch.tensor(finished, device=device)
        reads_prefix = position + 1 <= prefix_lengths  # position + 1 holds prefix[position]
        next_token = torch.where(reads_prefix, prefix[:, min(position, prefix.size(1) - 1)],
                                 placeholder)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        inputs = torch.cat([inputs, predicted.frames[:, None].to(inputs.dtype)], dim=1)
        is_frame = torch.cat([is_frame, ~reads_prefix[:, None]], dim=1)
    return [torch.stack(frames) for frames in outputs]

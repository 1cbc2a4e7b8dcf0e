"""What a modality is: the one object the core asks about a slot type.

An instruction slot ``[IMAGE:img]`` names a modality. Everything that type means lives
in one ``Modality`` object, registered under its name (``registry.py``): the plan asks
it where a slot may stand and which attribute values exist, the dataset asks it to read
and check a cell and turn it into model input, the model asks it for its adapters and
output heads, the criterion for its loss term, the task for decoding constraints, postprocessing, metrics and
what to store in the checkpoint. The core never names a modality.

Input side, two kinds (``input_kind``):

* ``"tokens"``: the slot becomes token ids of the shared vocabulary that join the text
  stream (TEXT, BOX's location tokens; later PHONE, STRUCT, image codes);
* ``"features"``: the slot becomes a tensor that an adapter of the modality embeds into
  a sequence of encoder positions (IMAGE; later AUDIO, VIDEO, MOTION).

Output side, two kinds (``output_kind``):

* ``"tokens"``: target token ids, decoded by fairseq's SequenceGenerator under the
  modality's constraints, postprocessed into the user's value;
* ``"continuous"``: target frames (``T x F``). The modality brings an output head (a
  pre-net the decoder reads previous frames through, and projections of the decoder
  states to a frame and a stop logit: ``modalities/frames.py``), its loss term and its
  generator (by default autoregressive frames until the stop flag:
  ``decoding/frame_generator.py``; a diffusion sampler would be another).

A slot may be *attached* to another slot of the same template (``anchor``): a BOX holds
pixels of an IMAGE, so the image's preprocessing moves the box with it.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import (TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple)

import numpy as np
import torch

from ..decoding.label_trie import ClosedSet
from ..instruction import AttrSpec, Slot

if TYPE_CHECKING:  # only for annotations
    from ..data.vocabulary import Vocabulary

ENCODER, DECODER = "encoder", "decoder"
MAX_FEATURE_SLOTS = 8  # feature slots per instruction: the encoder's slot embeddings
TOKENS, FEATURES, CONTINUOUS = "tokens", "features", "continuous"

# every slot type takes these two; their values are checked by the plan (``choices``)
COMMON_ATTRIBUTES = {
    "preprocess": AttrSpec("str", "name of the preprocessor that turns the column into model input"),
    "adaptor": AttrSpec("str", "name of the adaptor that embeds this slot for the model"),
}


@dataclasses.dataclass
class Context:
    """What a modality may use while it handles slots of one run.

    Args:
        vocab: the run's shared vocabulary.
        settings: this modality's run settings (``Modality.settings``; saved in checkpoints).
        closed_set: the label set of a ``closed_set`` target.
        path: the data file being read (error messages name it).
        base_dir: where relative file paths in cells are resolved.
        train: training (augmentation, noise) or evaluation.
        notes: what the modality changed while reading cells (``"rows cut from ..."`` ->
            count), logged as totals after the dataset's scan.
    """

    vocab: "Vocabulary"
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    closed_set: Optional[ClosedSet] = None
    path: str = ""
    base_dir: str = "."
    train: bool = False
    notes: Counter = dataclasses.field(default_factory=Counter)


class AdapterOutput(NamedTuple):
    """What every adapter returns to the encoder."""

    embeddings: torch.Tensor  # B x L x D, positions already added
    padding_mask: torch.Tensor  # B x L, True at padding


class Target(NamedTuple):
    values: Any  # what the loss sees: token ids, or frames (T x F)
    inputs: Any  # what the decoder reads (a noisy copy of tokens in training)


class Modality:
    """Everything one slot type means. Subclass it, then ``register_modality(instance)``.

    Class attributes:
        name: the slot type, upper case (``"IMAGE"``).
        attributes: the attributes a slot takes (``preprocess`` and ``adaptor`` are added).
        sides: where its slots may stand: ``("encoder",)`` for inputs only.
        choices: the values that ``str`` attributes may take (first: the default).
        input_kind: ``"tokens"`` or ``"features"``.
        output_kind: ``"tokens"``, ``"continuous"``, or None when it cannot be a target.
        implemented: False for a type whose grammar is declared ahead of its
            implementation: instructions parse, and the plan refuses them.
    """

    name: str = ""
    attributes: Mapping[str, AttrSpec] = {}
    sides: Tuple[str, ...] = (ENCODER, DECODER)
    choices: Mapping[str, Tuple[str, ...]] = {}
    input_kind: str = TOKENS
    output_kind: Optional[str] = TOKENS
    implemented: bool = True
    trains_vocabulary: bool = False  # its cells' texts train the sentencepiece model
    fits_statistics: bool = False  # its settings hold statistics of training cells (``fit``)
    # a feature input whose positions follow a text in time (speech): ``--ctc-weight``
    # aligns a token target to them
    ctc_alignable: bool = False
    # settings that come from the run's options even when a checkpoint brings settings
    # (they do not shape the model: AUDIO's vocoder)
    run_options: Tuple[str, ...] = ()
    # settings that give a trained model's symbols or weights their meaning: fine-tuning a
    # checkpoint must keep its values (BOX's number of location bins)
    checkpoint_options: Tuple[str, ...] = ()
    # architecture name -> this modality's option defaults for it (``--arch``)
    architecture_defaults: Mapping[str, Mapping[str, Any]] = {}

    def all_attributes(self) -> Dict[str, AttrSpec]:
        return {**COMMON_ATTRIBUTES, **self.attributes}

    # -- the plan ----------------------------------------------------------------------------
    def check_slot(self, slot: Slot, template) -> Optional[Tuple[int, str]]:
        """A rule that involves other slots of ``template`` (a ``TemplatePlan``):
        ``(position, message)`` if ``slot`` breaks it, else None."""
        return None

    def anchor(self, slot: Slot, template) -> Optional[Slot]:
        """The slot whose content this one describes (its preprocessing moves this one)."""
        return None

    # -- run settings --------------------------------------------------------------------------
    def settings(self, cfg) -> Dict[str, Any]:
        """This modality's run settings from the task options (saved in the checkpoint)."""
        return {}

    def plan_settings(self, settings: Dict[str, Any], slots: Sequence[Slot]) -> Dict[str, Any]:
        """``settings`` completed with what the run's ``slots`` of this modality need
        (the adapters to build), checked; called once, when the model is first built."""
        return settings

    def check_settings(self, settings: Mapping[str, Any], slots: Sequence[Slot]) -> None:
        """ValueError when ``settings`` (a checkpoint's) cannot serve ``slots`` (an
        instruction given at fine-tuning or inference that the model was not built for)."""

    def settings_from_old_checkpoint(self, task_state: Mapping[str, Any]) -> Dict[str, Any]:
        """The settings of a checkpoint written before modalities had their own (format 1)."""
        return {}

    def reserved_symbols(self, cfg) -> List[str]:
        """Symbols this modality adds to every dictionary (after the sentencepiece pieces)."""
        return []

    def fitted_symbols(self, settings: Mapping[str, Any]) -> List[str]:
        """Symbols the run's fitted statistics add to the dictionary (after the reserved
        ones; PHONE's phones seen in training)."""
        return []

    # -- reading a cell --------------------------------------------------------------------------
    def vocabulary_texts(self, cell: Any, slot: Slot, base_dir: str = ".") -> Sequence[str]:
        """Texts of a training cell that the sentencepiece vocabulary is trained on
        (``base_dir``: where relative file paths in cells are resolved)."""
        return ()

    def label_text(self, value: Any, slot: Slot) -> str:
        """A closed-set label as this modality normalizes its cells."""
        raise ValueError(f"{self.name} targets have no closed label sets")

    def read(self, cell: Any, slot: Slot, ctx: Context, decode: bool = True) -> Any:
        """Check one cell and return its value. A ValueError says what is wrong (the
        caller adds file, line and column). ``decode``: decode in full (items,
        ``--validate-data``), else check only what scanning a whole file can afford."""
        raise NotImplementedError

    def check_on_anchor(self, value: Any, anchor_value: Any, slot: Slot, ctx: Context) -> None:
        """ValueError if ``value`` does not fit its anchor's (e.g. a box outside its image)."""

    # -- statistics of the training split (``fits_statistics``) -----------------------------
    def statistics_sample_size(self, settings: Mapping[str, Any]) -> int:
        """How many training cells (a seeded sample) ``fit`` reads; 0: all."""
        return 0

    def cell_statistics(self, value: Any, slot: Slot, ctx: Context) -> Any:
        """What one training value (as ``read`` without ``decode`` returned it) adds to
        the statistics; a ValueError says what is wrong with it."""
        raise NotImplementedError

    def fit(self, settings: Mapping[str, Any], statistics: Sequence[Any]) -> Dict[str, Any]:
        """``settings`` with what the cells' ``cell_statistics`` make (e.g. feature mean and
        variance); called once before training: checkpoints carry the result."""
        raise NotImplementedError

    # -- token inputs --------------------------------------------------------------------------
    def num_tokens(self, value: Any, slot: Slot, ctx: Context) -> int:
        """Tokens the slot adds to the text stream (what ``--max-tokens`` counts)."""
        raise NotImplementedError

    def tokens(self, value: Any, slot: Slot, ctx: Context,
               rng: Optional[np.random.Generator]) -> List[int]:
        """Token ids in the text stream; ``rng`` is given in training (noise)."""
        raise NotImplementedError

    # -- feature inputs ------------------------------------------------------------------------
    def num_positions(self, value: Any, slot: Slot, ctx: Context) -> int:
        """Encoder positions the slot's adapter produces (what ``--max-tokens`` counts)."""
        raise NotImplementedError

    def adapter_key(self, slot: Slot, settings: Mapping[str, Any]) -> str:
        """The encoder's ModuleDict key of the adapter embedding this slot."""
        raise NotImplementedError

    def features(self, value: Any, slot: Slot, ctx: Context, attached: Sequence[Any],
                 seed: Optional[int]) -> Tuple[Any, List[Any]]:
        """The slot's input tensor, and the ``attached`` values (of the slots anchored
        here) moved by the same preprocessing; ``seed`` drives training augmentation."""
        raise NotImplementedError

    def batch_key(self, features) -> Any:
        """Features with equal keys are collated into one tensor (default: equal shapes)."""
        return tuple(features.shape)

    def collate(self, features: Sequence[Any]) -> Dict[str, Any]:
        """One group's features as the adapter's keyword arguments."""
        return {"inputs": torch.stack(list(features))}

    def build_adapters(self, settings: Mapping[str, Any], model_cfg, embed_dim: int):
        """adapter key -> module (inputs from ``collate`` -> ``AdapterOutput``)."""
        raise NotImplementedError

    def load_pretrained(self, adapters: Mapping[str, Any], model_cfg) -> None:
        """Start ``adapters`` (key -> module, as ``build_adapters`` made them) from weights a
        user brings, named in the model options (a backbone's file); called when a model
        is built for training, not when a checkpoint is read. Default: nothing."""

    # -- outputs -----------------------------------------------------------------------------------
    def target_length(self, value: Any, slot: Slot, ctx: Context) -> int:
        """Decoder steps of the target, end of sequence excluded."""
        return self.num_tokens(value, slot, ctx)

    def reference(self, value: Any, slot: Slot, ctx: Context) -> Any:
        """The target as metrics compare it (and as ``OFASys.inference`` returns it)."""
        raise NotImplementedError

    def target(self, value: Any, slot: Slot, ctx: Context,
               rng: Optional[np.random.Generator]) -> Target:
        """The target's tokens (or frames); ``value`` as its anchor's preprocessing left it
        (the reference comes from the value as read)."""
        tokens = self.tokens(value, slot, ctx, None)
        return Target(tokens, tokens)

    def output_context(self, slot: Slot, template, values: Mapping[Slot, Any]) -> Any:
        """What postprocessing one row's output needs besides its tokens (e.g. the size
        of the image a box is drawn on), from the row's read values."""
        return None

    def constraint(self, slot: Slot, ctx: Context) -> Optional["TokenConstraint"]:
        """What beam search may emit for the target; None: anything."""
        return None

    def postprocess(self, prediction: Any, slot: Slot, ctx: Context,
                    output_context: Any) -> Any:
        """A decoded target (token ids without end of sequence, or the generated frames)
        -> the user's value."""
        raise NotImplementedError

    def metrics(self, slot: Slot, template) -> List[str]:
        """Validation metrics of this target by default (names in
        ``scoring.validation_metrics``); the first is the main one."""
        return []

    def text_metrics(self) -> List[str]:
        """The default metrics of a free text target about an input of this modality:
        for a feature input, BLEU and CIDEr-D (a caption; speech's transcript: word error
        rate)."""
        return ["bleu", "cider"] if self.input_kind == FEATURES else []

    def optional_metrics(self, slot: Slot, template) -> List[str]:
        """Further metrics of this target a run may select (``--eval-metrics``, multitask
        ``metrics:``)."""
        return []

    def metric_stats(self, predictions: Sequence[Any], references: Sequence[Any], slot: Slot,
                     metrics: Sequence[str], corpus: "Corpus") -> Dict[str, float]:
        """Summable statistics of ``metrics`` for one batch of postprocessed predictions."""
        return {}

    # -- continuous outputs (output_kind == "continuous") ----------------------------------
    def build_output_head(self, settings: Mapping[str, Any], embed_dim: int) -> torch.nn.Module:
        """The module with ``embed(frames: ... x F) -> ... x D`` (what the decoder reads of
        a frame), ``forward(states: N x D, rows: N) -> FramePrediction`` (``rows``: each
        state's sequence, for a post-net over whole sequences) and ``refine`` (see
        ``modalities/frames.FrameHead``)."""
        raise NotImplementedError

    def loss(self, predicted, frames: torch.Tensor, stop: torch.Tensor, slot: Slot,
             weights) -> torch.Tensor:
        """Per-frame losses (``N``) of ``predicted`` against the target ``frames`` (``N x F``)
        and ``stop`` flags (``N``, 1 on each target's last frame), with the criterion's
        ``weights`` of the loss terms (``modalities/frames.FrameLossWeights``)."""
        raise NotImplementedError

    def generate(self, model, sample, slot: Slot, ctx: Context, max_len: int) -> List[Any]:
        """Each row's generated output (what ``postprocess`` reads), forced prefix excluded."""
        raise NotImplementedError

    def save_output(self, value: Any, path_stem: str) -> str:
        """Write a continuous output (as ``postprocess`` made it) or a reference to a file
        named ``path_stem`` plus an extension, and return its path (fairseq-generate)."""
        raise NotImplementedError(f"{self.name} outputs cannot be written to files")

    def saves_outputs(self) -> bool:
        """Whether ``save_output`` is implemented (fairseq-generate can decode it)."""
        return type(self).save_output is not Modality.save_output

    def format_generated(self, text: str, settings: Mapping[str, Any]) -> Optional[str]:
        """How fairseq-generate prints a detokenized output of this modality; None when
        ``text`` is not one."""
        return None


class TokenConstraint:
    """What beam search may emit next, for every hypothesis of a batch at once (one
    call per decoding step: see ``decoding/restricted_generator.py``)."""

    def allowed_mask(self, generated: torch.Tensor, lengths: torch.Tensor,
                     vocab_size: int) -> torch.Tensor:
        """Args:
            generated: ``(hypotheses, width)`` target tokens so far, forced prefix
                excluded, right-padded (``width >= 1``).
            lengths: ``(hypotheses,)`` how many of each row's tokens are real.
            vocab_size: the dictionary's size.
        Returns:
            ``(hypotheses, vocab_size)`` bool: the tokens allowed next.
        """
        raise NotImplementedError


class Corpus:
    """Every reference of one evaluated data file, for corpus-level metrics (CIDEr-D's
    document frequencies), with a cache for what modalities derive from them.

    Args:
        references: the file's references, in row order.
    """

    def __init__(self, references: Sequence[Any]):
        self.references = list(references)
        self.cache: Dict[str, Any] = {}


def unique(items: Iterable) -> List:
    return list(dict.fromkeys(items))

"""One shared vocabulary: sentencepiece subwords, specials and the modalities' symbols.

Dictionary layout: ``<s> <pad> </s> <unk>`` (fairseq's specials), the sentencepiece
pieces, ``<mask>`` (span masking), then the symbols modalities reserve in every
dictionary (``Modality.reserved_symbols``, in registration order: BOX's ``<bin_k>``
location tokens, ...). A checkpoint stores the symbols, so its ids never move.

The sentencepiece model is trained locally from the training data or supplied
by the user; its serialized bytes travel in the checkpoint (see
``InstructionTask.state_dict``) so a checkpoint needs no other file.
"""
import hashlib
import io
import logging
import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import sentencepiece as spm
from fairseq.data import Dictionary

logger = logging.getLogger(__name__)

MASK_SYMBOL = "<mask>"


def normalize_whitespace(text: str) -> str:
    """Runs of whitespace as one space, none at the ends (how instruction text is read)."""
    return " ".join(text.split())


class Vocabulary:
    """Text <-> fairseq token ids through a sentencepiece model.

    Args:
        sentencepiece_model: serialized sentencepiece ``ModelProto`` bytes.
        reserved_symbols: symbols appended after the pieces and ``<mask>`` (the
            modalities' own tokens).
        dictionary: an (empty) Dictionary to fill in place; fairseq tools may hold a
            reference to the task's dictionary before the checkpoint is read.
    """

    def __init__(self, sentencepiece_model: bytes, reserved_symbols: Sequence[str] = (),
                 dictionary: Optional[Dictionary] = None):
        self.sentencepiece_model = sentencepiece_model
        self.reserved_symbols = list(reserved_symbols)
        self.dictionary = dictionary if dictionary is not None else Dictionary()
        if len(self.dictionary) != 4:
            raise ValueError("Vocabulary must fill a fresh Dictionary")
        self._processor = None
        processor = self.processor
        # spm id -> dictionary id; spm's <unk> (id 0) maps onto fairseq's <unk>.
        self._spm_to_dict = np.empty(processor.get_piece_size(), dtype=np.int64)
        self._spm_to_dict[processor.unk_id()] = self.dictionary.unk()
        for spm_id in range(processor.get_piece_size()):
            if spm_id != processor.unk_id():
                self._spm_to_dict[spm_id] = self.dictionary.add_symbol(processor.id_to_piece(spm_id))
        self.mask_index = self.dictionary.add_symbol(MASK_SYMBOL)
        for symbol in self.reserved_symbols:
            self.dictionary.add_symbol(symbol)
        self._dict_to_spm = {int(d): s for s, d in enumerate(self._spm_to_dict)}

    @property
    def processor(self) -> spm.SentencePieceProcessor:
        # Built lazily: SentencePieceProcessor does not pickle into DataLoader workers.
        if self._processor is None:
            self._processor = spm.SentencePieceProcessor(model_proto=self.sentencepiece_model)
        return self._processor

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_processor"] = None
        return state

    def encode(self, text: str) -> List[int]:
        if not text:
            return []
        return self._spm_to_dict[self.processor.encode(text)].tolist()

    def decode(self, ids: Iterable[int]) -> str:
        """Text for dictionary ids; specials and reserved symbols are skipped."""
        pieces = [self._dict_to_spm[i] for i in map(int, ids) if i in self._dict_to_spm]
        return self.processor.decode(pieces)

    @property
    def subword_ids(self) -> range:
        """Dictionary ids of the subword pieces (the targets of random-token noise)."""
        return range(self.dictionary.nspecial, self.mask_index)

    def state_dict(self) -> Dict[str, object]:
        return {"sentencepiece_model": self.sentencepiece_model,
                "symbols": list(self.dictionary.symbols)}

    @classmethod
    def from_state_dict(cls, state: Dict[str, object],
                        dictionary: Optional[Dictionary] = None) -> "Vocabulary":
        symbols = list(state["symbols"])
        reserved = symbols[symbols.index(MASK_SYMBOL) + 1:]
        vocab = cls(state["sentencepiece_model"], reserved, dictionary)
        if list(vocab.dictionary.symbols) != list(state["symbols"]):
            raise ValueError("checkpoint vocabulary does not match its sentencepiece model")
        return vocab


def train_sentencepiece(texts: Iterable[str], vocab_size: int, cache_dir: Optional[str] = None,
                        model_type: str = "bpe") -> bytes:
    """Train a sentencepiece model on ``texts`` (deterministic; cached by content hash).

    ``vocab_size`` is an upper bound: small corpora yield fewer pieces rather than
    an error. BPE by default: with that soft limit, sentencepiece's unigram trainer
    collapses small corpora to single characters (51 pieces for the demo NLI data at
    any vocab_size), doubling sequence lengths; BPE keeps whole words.
    """
    sentences = [t for t in texts if t and t.strip()]
    if not sentences:
        raise ValueError("no text to train the sentencepiece model on")
    digest = hashlib.sha256()
    for s in sentences:
        digest.update(s.encode("utf-8") + b"\n")
    digest.update(f"{vocab_size}:{model_type}".encode())
    cached = os.path.join(cache_dir, f"spm-{digest.hexdigest()[:20]}.model") if cache_dir else None
    if cached and os.path.exists(cached):
        logger.info(f"reusing sentencepiece model {cached}")
        with open(cached, "rb") as f:
            return f.read()

    logger.info(f"training a sentencepiece model (up to {vocab_size} pieces) "
                f"on {len(sentences)} texts")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, hard_vocab_limit=False, character_coverage=1.0,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, num_threads=1,
        input_sentence_size=2_000_000, shuffle_input_sentence=True, minloglevel=2,
        # whole-number pieces would make digit strings ambiguous to split
        split_digits=True,
    )
    proto = model.getvalue()
    if cached:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cached}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(proto)
        os.replace(tmp, cached)  # atomic: concurrent ranks may race here
    return proto


def load_sentencepiece(path: str) -> bytes:
    with open(path, "rb") as f:
        proto = f.read()
    # fail now, with the path, if invalid (sentencepiece's own error names no file, and an
    # empty file "loads" as a model without pieces)
    try:
        pieces = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
    except RuntimeError as e:
        raise ValueError(f"{path}: not a valid sentencepiece model ({e})") from None
    if pieces == 0:
        raise ValueError(f"{path}: not a valid sentencepiece model (no pieces)")
    return proto


def default_cache_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(root, "ofasys_fairseq")


"""Safe checkpoint loading on torch >= 2.6.

torch now unpickles with ``weights_only=True``: only tensors, containers,
primitives and explicitly allow-listed globals may appear in a checkpoint.
fairseq checkpoints additionally hold ``argparse.Namespace`` (legacy ``args``)
and a few plain-Python types, so they fail to load with "Unsupported global".

We register exactly those classes when the plugin is imported, which fixes
``fairseq-train`` resume, ``fairseq-generate`` and ``OFASys.from_pretrained``
without ``weights_only=False``: anything else pickled in a checkpoint (e.g. a
malicious ``os.system`` reduce) is still refused by torch.
"""
import argparse

import torch

# The globals a fairseq checkpoint can hold beyond torch's defaults: only the legacy
# ``args`` Namespace (checked with torch.serialization.get_unsafe_globals_in_checkpoint
# on checkpoints from fairseq-train; everything else is tensors and plain containers).
FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace,)


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint pickles a global outside the allow-list."""


def allow_fairseq_checkpoint_globals() -> None:
    torch.serialization.add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))


def check_checkpoint_is_safe(path: str) -> None:
    """Raise :class:`UnsafeCheckpointError` naming any global that is not allow-listed.

    Used by the Python API to give a clear message before fairseq tries to load
    the file; the fairseq command-line tools get torch's own refusal.
    """
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in torch.serialization.get_safe_globals()}
    unsafe = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - allowed)
    if unsafe:
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint {path}: it pickles {', '.join(unsafe)}, which a "
            "fairseq checkpoint never contains (only tensors, plain containers and "
            "argparse.Namespace). Loading it could run arbitrary code."
        )

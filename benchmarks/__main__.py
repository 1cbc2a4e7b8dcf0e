"""``python -m benchmarks [--quick] [--only NAME]`` (``make benchmark``): runs
``benchmarks/criterion.py``, ``benchmarks/image_pipeline.py``, ``benchmarks/audio_pipeline.py``,
``benchmarks/multitask.py``, ``benchmarks/train_speed.py``, ``benchmarks/decoding.py`` and
``benchmarks/data_loading.py``,
each printing its ratios against baselines measured in the same run."""
import argparse
import logging
import sys
import warnings

# fairseq and torch chatter at import time; the benchmark prints its own report
logging.basicConfig(level=logging.WARNING, force=True)
warnings.filterwarnings("ignore", category=FutureWarning)
# fairseq's use of deprecated Hydra APIs
warnings.filterwarnings("ignore", module="hydra")
warnings.filterwarnings("ignore", message=r"\s*'config' is validated against ConfigStore schema")
warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask and attn_mask")
# fairseq's DataLoader asks for pinned memory, which a CPU-only machine cannot give
warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true")

from benchmarks import (audio_pipeline, criterion, data_loading, decoding,  # noqa: E402
                        image_pipeline, multitask, train_speed)

BENCHMARKS = {"criterion": criterion.main, "image_pipeline": image_pipeline.main,
              "audio_pipeline": audio_pipeline.main, "multitask": multitask.main,
              "train_speed": train_speed.main, "decoding": decoding.main,
              "data_loading": data_loading.main}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--only", choices=list(BENCHMARKS), action="append",
                        help="run this benchmark only (repeatable)")
    args = parser.parse_args(argv)
    status = 0
    for name in args.only or BENCHMARKS:
        print(f"\n######## {name}", flush=True)
        status = BENCHMARKS[name](["--quick"] if args.quick else []) or status
    return status


if __name__ == "__main__":
    sys.exit(main())

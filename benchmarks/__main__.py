"""``python -m benchmarks`` (``make benchmark``): see ``benchmarks/criterion.py``."""
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

from benchmarks.criterion import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

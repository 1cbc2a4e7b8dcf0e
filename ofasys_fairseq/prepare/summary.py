"""What a conversion wrote and left out, reported at its end."""
from collections import Counter
from typing import Dict


class Summary:
    """Rows written per output file, and rows skipped per reason."""

    def __init__(self):
        self.written: Dict[str, int] = {}
        self.skipped: Counter = Counter()

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def __str__(self) -> str:
        lines = [f"wrote {count} rows to {path}" for path, count in self.written.items()]
        lines += [f"skipped {count}: {reason}" for reason, count in sorted(self.skipped.items())]
        return "\n".join(lines or ["nothing to convert"])

"""One-line notices for the user and number formatting shared by the CLI and the trainer's log.

Notices go to stderr, prefixed ``mtlkit:``, so they show in a terminal, a log file or a cluster
job's output alike, without mixing into results printed on stdout. No torch import here.
"""

from __future__ import annotations

import sys


def notice(message: str) -> None:
    """Tell the user something that is not an error but changes what the run means."""
    print(f"mtlkit: {message}", file=sys.stderr, flush=True)


def format_metric(key: str, value: float) -> str:
    """Counts (ints, or integral floats under a ``num_*`` / ``*count`` key) as integers, other
    numbers with 4 decimals: ``accuracy=1.0000`` but ``num_pairs=2100``."""
    is_count = key.startswith("num_") or key.endswith("count")
    if isinstance(value, int) or (is_count and float(value).is_integer()):
        return str(int(value))
    return f"{value:.4f}"

"""Write the demo's sample orders file, ``examples/sample_orders.csv``.

The output is the same on every run (a seeded generator), so the committed
file can be regenerated and checked::

    python examples/make_sample.py [PATH]

About 2.9 MB: larger than Werkzeug's 500 KiB in-memory limit, so an upload
of it is spooled to a temporary file on disk, the case Flask-Offload hands
off to a job without copying.
"""

from __future__ import annotations

import csv
import os
import random
import sys
from datetime import datetime
from datetime import timedelta

#: Rows in the sample, not counting the header.
ROWS = 45_000
SEED = 20240501
HEADER = ("order_id", "ordered_at", "customer", "sku", "quantity", "unit_price")
DEFAULT_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "sample_orders.csv"
)

_FIRST = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell", "Hooli")
_SECOND = ("Foods", "Tools", "Labs", "Traders", "Outfitters", "Logistics, Inc.")
_START = datetime(2024, 1, 1)


def customers() -> list[str]:
    """The sample's customer names; some contain commas, to need quoting."""
    return [f"{first} {second}" for first in _FIRST for second in _SECOND]


def write_sample(path: str, rows: int = ROWS, seed: int = SEED) -> None:
    """Write ``rows`` random orders to ``path``, the same for the same seed.

    :param path: The file to write.
    :param rows: How many order rows.
    :param seed: The random generator's seed.
    """
    rng = random.Random(seed)
    names = customers()
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        for n in range(1, rows + 1):
            ordered_at = _START + timedelta(seconds=rng.randrange(366 * 24 * 3600))
            writer.writerow(
                (
                    f"ORD-{n:06d}",
                    ordered_at.isoformat(),
                    rng.choice(names),
                    f"SKU-{rng.randrange(1, 500):04d}",
                    rng.randint(1, 12),
                    f"{rng.randint(99, 25_000) // 100}.{rng.randint(0, 99):02d}",
                )
            )


def main(argv: list[str] | None = None) -> None:
    """Write the sample to the path given, or next to this script."""
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else DEFAULT_PATH
    write_sample(path)
    print(f"Wrote {ROWS:,} orders to {path} ({os.path.getsize(path):,} bytes).")


if __name__ == "__main__":
    main()

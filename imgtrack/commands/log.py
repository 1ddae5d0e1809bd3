"""`imgtrack log`: records newest first, from the ledger, offline."""

from __future__ import annotations

from imgtrack.errors import UsageError
from imgtrack.ledger.ledger import Ledger
from imgtrack.ledger.schema import Build


def log_records(ledger: Ledger, image: str | None, limit: int | None) -> list[Build]:
    """Records newest first, optionally of one image."""
    if limit is not None and limit < 0:
        raise UsageError(f"-n {limit} is negative; give how many records to show")
    if image is not None:
        ledger.require_image(image)
    return ledger.log(image, limit)

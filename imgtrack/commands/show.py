"""`imgtrack show`: the record a digest, version, tag or commit names, from the ledger, offline."""

from __future__ import annotations

from imgtrack.errors import InvalidReference, NotFound
from imgtrack.ledger.ledger import Ledger
from imgtrack.ledger.schema import Build


def show_record(ledger: Ledger, ref: str) -> Build:
    try:
        return ledger.find_one(ref, probe=True)
    except InvalidReference as exc:
        if "matches no record" in str(exc):
            raise NotFound(str(exc)) from None
        raise

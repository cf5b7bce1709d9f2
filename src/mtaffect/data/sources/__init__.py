"""One reader per native database format; each returns frame records and decodes no image.

Every reader has the signature ``read_<format>(root, skips) -> (records DataFrame, info dict)``
where the records follow :data:`mtaffect.data.records.COLUMNS` and ``skips`` collects the
rows that were skipped, by reason (:class:`mtaffect.data.records.Skips`).
"""

from __future__ import annotations

from mtaffect.data.sources.afew_va import read_afew_va
from mtaffect.data.sources.affectnet import read_affectnet
from mtaffect.data.sources.affwild2 import read_affwild2
from mtaffect.data.sources.expw import read_expw
from mtaffect.data.sources.generic import read_generic
from mtaffect.data.sources.testlists import read_test_list

READERS = {
    "affwild2": read_affwild2,
    "affectnet": read_affectnet,
    "expw": read_expw,
    "afew_va": read_afew_va,
}
"""Native database name -> reader (``generic`` CSVs are read by :func:`read_generic`)."""

__all__ = [
    "READERS",
    "read_affwild2",
    "read_affectnet",
    "read_expw",
    "read_afew_va",
    "read_generic",
    "read_test_list",
]

"""Small shared helpers: atomic writes, randomness, progress bars, validation."""

from medsure.utils.io import (
    VERSION_KEY,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    with_version,
    write_json,
    write_result_json,
)
from medsure.utils.progress import progress
from medsure.utils.random import make_generator, torch_generator

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "write_result_json",
    "with_version",
    "VERSION_KEY",
    "progress",
    "make_generator",
    "torch_generator",
]

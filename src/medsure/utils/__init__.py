"""Small shared helpers: atomic writes, randomness, progress bars, validation."""

from medsure.utils.io import atomic_write, atomic_write_bytes, atomic_write_text, write_json
from medsure.utils.progress import progress
from medsure.utils.random import make_generator, torch_generator

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "progress",
    "make_generator",
    "torch_generator",
]

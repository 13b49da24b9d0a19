"""Importable test helpers (kept for existing imports; the factories live in msa_testing)."""

from msa_testing import make_llama, make_tokenizer

__all__ = ["make_llama", "make_tokenizer"]

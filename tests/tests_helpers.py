"""Importable test helpers (conftest.py is not meant to be imported by tests)."""

from conftest import make_llama, make_tokenizer

__all__ = ["make_llama", "make_tokenizer"]

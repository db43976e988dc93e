"""sprc_lib: the library behind the SPRC course (composed image retrieval with sentence-level prompts)."""

__version__ = "0.1.0"

"""The memory system served by the MemLoRA adapters: extract -> update -> generate over a SQLite store.

Stdlib + numpy at import time; torch, transformers, llguidance and executorch are imported lazily by the modules
that need them (reference.py, embed.py, constrain.py).
"""

"""Distillation data and LoRA training for the three MemLoRA adapters (`memlora-train`).

data.py builds the examples from LoCoMo-format conversations through the memory pipeline's own prompt functions
(runtimes.memory.prompts) so training renders exactly what inference renders; trainer.py fits one PEFT LoRA adapter
per op on the base model; cli.py is the `memlora-train` command. Heavy imports (torch, peft) are lazy.
"""

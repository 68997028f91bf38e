"""Bridges from nudgelib to other training engines.

* :mod:`nudgelib.integrations.trl` — NuRL's hint nudging inside TRL's ``GRPOTrainer`` (DDP,
  DeepSpeed, FSDP and vLLM generation through accelerate); needs ``pip install 'nudgelib[trl]'``.
* :mod:`nudgelib.integrations.trl_train` — the command-line run of it with nudgelib's presets,
  for ``accelerate launch``.
"""

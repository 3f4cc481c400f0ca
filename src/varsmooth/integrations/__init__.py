"""Integrations with training frameworks (optional extras).

- ``varsmooth.integrations.hf``: ``IVONTrainer``, a Hugging Face ``transformers.Trainer`` that trains with IVON
  (``pip install "varsmooth[hf]"``).

Each submodule imports its framework when it is imported, never when this package is.
"""

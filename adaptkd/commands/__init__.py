"""Sub-commands of the ``adaptkd`` CLI (one module each)."""

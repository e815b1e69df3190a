"""The inference file's reader and writer live in `pddpm.artefacts` with every other stage file; these
names stay importable from here for existing callers."""

from pddpm.artefacts import load_inference, save_inference  # noqa: F401

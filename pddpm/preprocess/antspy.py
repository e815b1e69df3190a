"""The one place antspyx is imported (`load`), for registration and the ANTs N4.

antspyx's package `__init__` star-imports every subpackage. Four of them are never used here and cost
most of the import: `ants.math` (statsmodels), `ants.learn` (scikit-learn), `ants.plotting` (matplotlib)
and `ants.deeplearn`, 2.3 of the 2.9 s `import ants` takes on the demo machine, once per register job.
While ants loads, empty placeholder modules stand in for them; they are removed right after, so a later
`import ants.math` still loads the real subpackage (only its names are then missing from `ants.*`).
"""

from __future__ import annotations

import sys
import types

UNUSED_SUBPACKAGES = ("ants.math", "ants.learn", "ants.plotting", "ants.deeplearn")


def load():
    """The `ants` module; imported without `UNUSED_SUBPACKAGES` unless something imported it before."""
    if "ants" not in sys.modules:
        placeholders = [name for name in UNUSED_SUBPACKAGES if name not in sys.modules]
        sys.modules.update({name: types.ModuleType(name) for name in placeholders})
        try:
            import ants  # noqa: F401
        finally:
            for name in placeholders:
                del sys.modules[name]
    import ants

    return ants

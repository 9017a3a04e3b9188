"""Research scripts behind the model cards' figures: ``python -m tools research NAME [ARGS]``.

Each script's docstring says what it measures and how the card's figures were made. Scripts that
train through a bundle run its configs with overrides through :mod:`tools.runner`; the DINO
diagnosis loops say in their docstrings why they cannot use the bundle's trainer.
"""

from pathlib import Path

#: the runnable scripts (module names under tools/research)
SCRIPTS = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))

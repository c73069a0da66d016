"""matplotlib, loaded the one way every figure needs it: headless, and only when asked.

Plots are optional (the ``plots`` extra); a missing matplotlib is a usage error with the
install command, not an ImportError from deep inside a command.
"""

from __future__ import annotations

from typing import Any

from gradience.errors import UsageError

__all__ = ["pyplot"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UsageError("plotting needs matplotlib: pip install 'gradience[plots]'", param="plot") from e
    return plt

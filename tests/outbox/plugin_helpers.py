"""Install a one-module package with entry points into a folder, as pip would, for the plugin tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_distribution(site: Path, module: str, source: str, entry_points: str) -> Path:
    """Write ``<module>.py`` and its dist-info (``entry_points.txt`` as given) into ``site``; return ``site``.

    With ``site`` on ``sys.path`` (or ``PYTHONPATH`` of a subprocess),
    ``importlib.metadata`` finds the entry points: a third-party package with
    no change to strangler.
    """
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    name = module.replace("_", "-")
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    (info / "RECORD").write_text("")
    return site

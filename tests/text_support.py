"""The project's own text files (sources, tests, docs, bench), for tests that read them."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

#: The root of the source tree (the checkout, or the unpacked sdist under tox).
ROOT = Path(__file__).resolve().parent.parent


def project_files(*patterns: str) -> Iterator[Path]:
    """Files under ROOT matching the glob patterns, in a stable order."""
    seen: set[Path] = set()
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file() and path not in seen and "__pycache__" not in path.parts:
                seen.add(path)
                yield path


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))

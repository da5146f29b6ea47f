"""``python -m symple_tx.cli``: the ``symple`` command."""

from . import main

main()

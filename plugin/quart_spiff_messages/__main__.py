"""``python -m quart_spiff_messages`` is the ``spiff-messages`` command."""

from .cli import main

main()

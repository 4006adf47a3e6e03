"""`python -m soloist …` is the `soloist` command."""

from .cli import main

main()

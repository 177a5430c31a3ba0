"""`python -m lscape_cli` is the same as the `lscape` console script."""

from lscape_cli.cli import main

if __name__ == "__main__":
    main()

"""`python -m labelwise.cli`: the same command as the `labelwise` console script."""

from labelwise.cli import main

main()

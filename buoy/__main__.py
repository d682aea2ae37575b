"""`python -m buoy` runs the `buoy` command line."""

from buoy.cli import main

main()

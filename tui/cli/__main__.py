"""Lets ``python -m tui.cli`` run the command line."""

import sys

from tui.cli import main

sys.exit(main())

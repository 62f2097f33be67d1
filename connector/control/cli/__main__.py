"""`python -m connector.control.cli`: the `ggic` command."""

import sys

from connector.control.cli import main

sys.exit(main())

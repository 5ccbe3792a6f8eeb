"""`python -m hqjepa ...`: the command line of `hqjepa.cli`."""

from hqjepa.cli import main

raise SystemExit(main())

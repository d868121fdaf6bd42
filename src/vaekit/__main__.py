"""``python -m vaekit``: the same command line as the ``vaekit`` script."""

from vaekit.cli.main import main

raise SystemExit(main())

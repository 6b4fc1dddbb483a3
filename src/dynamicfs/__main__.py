"""`python -m dynamicfs` runs the command line."""

from dynamicfs.cli.main import main

raise SystemExit(main())

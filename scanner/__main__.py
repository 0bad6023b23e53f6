"""``python -m scanner`` runs the ``beacon-scanner`` command line."""

from scanner.cli import main

raise SystemExit(main())

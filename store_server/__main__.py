"""`python -m store_server` runs the `store-server` command line."""

from store_server.launcher import main

raise SystemExit(main())

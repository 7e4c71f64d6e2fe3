"""``python3 -m benchmarks [--quick]``: every benchmark; a table, JSON and a plot."""

from benchmarks.run import main

raise SystemExit(main())

"""``python -m cluster``: the same as the ``reproducer`` command."""

from cluster.cli import main

raise SystemExit(main())

"""``python -m reproducer``: the same as the ``reproducer`` command.

The command layer lives in ``cluster.cli`` (it knows both ``reproducer`` and ``analyses``);
this entry point is never imported by the package itself.
"""

from cluster.cli import main

raise SystemExit(main())

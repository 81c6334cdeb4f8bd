"""``python -m reproducer``: the same as the ``reproducer`` command."""

from reproducer.cli import main

raise SystemExit(main())

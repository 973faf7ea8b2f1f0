"""``python -m anorefine COMMAND ...``: the same as the ``anorefine`` console command."""

import sys

from anorefine.commands import main

sys.exit(main())

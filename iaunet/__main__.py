"""``python -m iaunet``: the same as the ``iaunet`` command."""
import sys

from iaunet.cli import main

sys.exit(main())

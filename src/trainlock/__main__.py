"""`python -m trainlock ...` (and `torchrun ... -m trainlock lock ...`): the command line."""

import sys

from .cli import main

sys.exit(main())

"""`python -m usema.cli ...` (and `torchrun ... -m usema.cli train ...`): the `usema` command."""

import sys

from usema.cli import main

sys.exit(main())

"""``python -m mtaffect`` (and ``torchrun -m mtaffect``) run the command line."""

import sys

from mtaffect.cli import main

sys.exit(main())

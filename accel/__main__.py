"""`python -m accel ...` is the `accel` command, so `torchrun -m accel train ...` runs it on each rank."""
import sys

from accel.cli.main import main

sys.exit(main())

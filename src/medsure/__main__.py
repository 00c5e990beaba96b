import sys

from medsure.cli import main

sys.exit(main())

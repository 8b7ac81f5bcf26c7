import sys

from eelib.cli import main

sys.exit(main())

import sys

from miqd.cli import main

sys.exit(main())

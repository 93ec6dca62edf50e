import sys

from wbvb.sweep.cli import main

sys.exit(main())

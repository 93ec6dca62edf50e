import sys

from wbvb.analysis.cli import main

sys.exit(main())

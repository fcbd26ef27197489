import sys

from gatosd.cli import main

sys.exit(main())

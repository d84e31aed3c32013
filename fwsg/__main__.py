import sys

from fwsg.cli import main

sys.exit(main())

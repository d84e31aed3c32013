"""``python -m fwsg.lab [NAME]``: build a small lab, run every probe once, tear it down."""

import sys

from fwsg.lab.topology import main

sys.exit(main())

import sys

from fedticket.cli import main

sys.exit(main())

import sys

from gradience.cli.main import main

sys.exit(main())

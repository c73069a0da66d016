"""``python -m gradience.action [flags]`` is ``gradience action run [flags]``: the entry point a
workflow step can call without the console script on its PATH."""

import sys

from gradience.cli.main import main

sys.exit(main(["action", "run", *sys.argv[1:]]))

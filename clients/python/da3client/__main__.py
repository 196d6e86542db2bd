"""``python3 -m da3client``: the da3-client command."""
import sys

from .cli import main

sys.exit(main())

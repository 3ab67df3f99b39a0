"""python -m nixfleet.ai: ai-cli from a checkout (or the lab's copy of the modules)."""

import sys

from nixfleet.ai.cli import main

sys.exit(main())

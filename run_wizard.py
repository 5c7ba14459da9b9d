"""lora-wizard: `python run_wizard.py` opens the wizard; `demo`, `replay` and `queue` run without questions."""

import sys

from wizard.app import main

if __name__ == "__main__":
    sys.exit(main())

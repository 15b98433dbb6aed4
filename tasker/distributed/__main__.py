"""``python -m tasker.distributed worker package.module:app`` (see ``_run.main``)."""

import sys

from tasker.distributed._run import main

sys.exit(main())

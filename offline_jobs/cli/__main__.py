"""``python -m offline_jobs.cli``: the ``profilerec-jobs`` command."""

import sys

from offline_jobs.cli.jobs import main

sys.exit(main())

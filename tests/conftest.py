"""Settings for the whole suite.

Hypothesis: the fuzz tests draw the same examples on every run (``derandomize``), so CI
is repeatable and a failure is one a developer can reproduce; ``HYPOTHESIS_PROFILE=explore``
draws new ones each run, to look further (with each test's own ``max_examples``).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

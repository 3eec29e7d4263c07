"""The e2e test world now ships in the package (jobsafe_ops/testing/world.py, so that
`jobsafe demo` runs from an installed wheel); `tests.world` is the same module object,
so imports and monkeypatching in the tests are unchanged."""

import sys

from jobsafe_ops.testing import world as _world

sys.modules[__name__] = _world

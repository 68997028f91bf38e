"""Test-wide settings. Lives at the root so it also applies to notebooks run by nbmake.

Tests run in fast mode: NUDGE_FAST=1 is exported before any test or notebook kernel starts
(kernels inherit the environment), unless the caller set it explicitly.
"""

import os

os.environ.setdefault("NUDGE_FAST", "1")

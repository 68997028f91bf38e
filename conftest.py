"""Test-wide settings. Lives at the root so it also applies to notebooks run by nbmake.

Tests run in fast mode: NUDGE_FAST=1 is exported before any test or notebook kernel starts
(kernels inherit the environment), unless the caller set it explicitly.

The notebooks that the browser suite runs (tests/test_browser.py) are not also run by nbmake
when that suite is selected and can run here, so no notebook executes twice in one session;
without a browser they run under nbmake as before.
"""

import os

import pytest

os.environ.setdefault("NUDGE_FAST", "1")


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected what they deselect
def pytest_collection_modifyitems(config, items):
    from tests.test_browser import browser_missing

    in_browser = {item.callspec.params["name"] for item in items
                  if item.get_closest_marker("browser") and hasattr(item, "callspec")
                  and "name" in item.callspec.params}
    if not in_browser or browser_missing():
        return
    drop = [item for item in items
            if item.path.suffix == ".ipynb" and item.path.name in in_browser]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [item for item in items if item not in drop]

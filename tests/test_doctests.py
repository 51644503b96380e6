import doctest

import pytest

import bitmcu.apps.die.display
import bitmcu.deploy.codegen
import bitmcu.deploy.ops
import bitmcu.train.models


@pytest.mark.parametrize("module", [bitmcu.apps.die.display, bitmcu.deploy.codegen,
                                    bitmcu.deploy.ops, bitmcu.train.shapes])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0

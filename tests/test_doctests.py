import doctest

import pytest

import bitmcu.deploy.codegen
import bitmcu.deploy.ops
import bitmcu.train.models


@pytest.mark.parametrize("module", [bitmcu.deploy.codegen, bitmcu.deploy.ops,
                                    bitmcu.train.shapes])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0

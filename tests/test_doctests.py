import doctest

import pytest

import bitmcu.codegen
import bitmcu.models


@pytest.mark.parametrize("module", [bitmcu.codegen, bitmcu.models])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0

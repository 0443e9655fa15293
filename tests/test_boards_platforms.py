"""``bnnhw.boards.platforms``: every board entry builds its platform with the resources the
board top uses."""

from dataclasses import replace

import pytest
from bnnhw.boards.platforms import EXTRA_RESOURCES, make_platform

from bnnhw.devices import BOARDS


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_each_board_has_its_uart_and_leds(name):
    board = BOARDS[name]
    assert set(board.extra_resources) <= set(EXTRA_RESOURCES)
    platform = make_platform(board)
    assert platform.lookup("uart", 0) is not None
    for resource, number, _, _ in board.leds:
        assert platform.lookup(resource, number) is not None


def test_an_unknown_recipe_is_named():

    with pytest.raises(ValueError, match=r"board ulx3s-85f: unknown extra resource "
                                         r"'no-such-recipe' \(choices: break-off-pmod, "
                                         r"uart-io0-io1\)"):
        make_platform(replace(BOARDS["ulx3s-85f"], extra_resources=("no-such-recipe",)))

import pytest

from idealab.search.schedule import ExploitSchedule


def test_exploit_share_follows_the_released_formula():
    s = ExploitSchedule()
    assert [s.share(t) for t in range(9)] == pytest.approx([0.0, 0.5, 0.6, 0.6, 0.7, 0.7, 0.8, 0.8, 0.8])


def test_split_counts_for_paper_sizes():
    s = ExploitSchedule()
    assert s.split(0, 80) == (0, 80)
    assert s.split(1, 80) == (40, 40)
    assert s.split(2, 50) == (30, 20)
    assert s.split(9, 80) == (60, 20)  # 64, rounded down to a multiple of 10
    assert s.split(9, 50) == (40, 10)


def test_round_to_multiple_of_ten_like_the_released_code():
    s = ExploitSchedule()
    assert s.split(2, 45) == (20, 25)  # 27 -> 20
    assert s.split(2, 15) == (9, 6)  # fewer than 20 ideas: not rounded (it would leave no exploit idea)
    assert ExploitSchedule(round_to=1).split(9, 80) == (64, 16)


def test_schedule_is_configurable_and_validated():
    s = ExploitSchedule(start=0.2, step=0.2, every=1, cap=0.6)
    assert [s.share(t) for t in range(1, 5)] == pytest.approx([0.4, 0.6, 0.6, 0.6])
    with pytest.raises(ValueError):
        ExploitSchedule(cap=1.5)

"""Reports named to the second never overwrite one written in the same second."""

from __future__ import annotations

from datetime import datetime

from loadtests.report_names import report_stem

NOW = datetime(2026, 12, 7, 5, 30, 1)


def test_a_free_second_gives_the_plain_stamp(tmp_path):
    assert report_stem(tmp_path, "bench-", NOW) == tmp_path / "bench-20261207-053001"
    assert report_stem(tmp_path / "not-made-yet", "bench-", NOW).name == "bench-20261207-053001"


def test_a_taken_stem_gets_the_next_free_number(tmp_path):
    (tmp_path / "bench-20261207-053001.json").write_text("{}")
    assert report_stem(tmp_path, "bench-", NOW).name == "bench-20261207-053001-2"
    (tmp_path / "bench-20261207-053001-2.md").write_text("")
    (tmp_path / "bench-20261207-053001-23.md").write_text("")  # -23 does not take -2's place twice
    assert report_stem(tmp_path, "bench-", NOW).name == "bench-20261207-053001-3"


def test_locust_files_take_their_stem_and_other_prefixes_do_not(tmp_path):
    (tmp_path / "locust-20261207-053001_stats.csv").write_text("")
    (tmp_path / "bench-lora-20261207-053001.json").write_text("{}")
    assert report_stem(tmp_path, "locust-", NOW).name == "locust-20261207-053001-2"
    assert report_stem(tmp_path, "bench-", NOW).name == "bench-20261207-053001"

"""The report tests share one real database and one report built from it (see _report_testlib)."""

from __future__ import annotations

import pytest

from _report_testlib import ReportFixture, build_report_fixture


@pytest.fixture(scope="session")
def report_fixture(tmp_path_factory: pytest.TempPathFactory) -> ReportFixture:
    return build_report_fixture(tmp_path_factory.mktemp("report"))

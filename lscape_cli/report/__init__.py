"""``lscape report``: one self-contained page (HTML + Markdown) and paper-ready tables for a study.

The API a notebook user imports: ``make_report(ReportRequest(inputs=(Path("runs"),)))``.
"""

from lscape_cli.report.build import ReportRequest, ReportResult, make_report

__all__ = ["ReportRequest", "ReportResult", "make_report"]

"""Attribution report and gate, read from ClickHouse.

Pure builders (`flips`, `gaps`, `gate.judge`, `attribution.build_report`) are separate from the SQL
(`evidence.gather`, `report_sql.fetch`), which binds every argument as a parameter; rendering lives
in `text`, `jsonout` and `plots` (matplotlib, imported lazily).
"""

from streams.report.attribution import Report, build_report
from streams.report.evidence import GateQuery, gather
from streams.report.gate import GateEvidence, GateResult, Reason, judge

__all__ = ["GateEvidence", "GateQuery", "GateResult", "Reason", "Report", "build_report", "gather", "judge"]

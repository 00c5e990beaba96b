"""Hand-off to the expert: a policy fitted once on calibration data (:mod:`.policy`), triage of new
unlabelled cases into auto-accepted and review with reasons and priorities (:mod:`.triage`), and the
audit of the guarantee once expert labels exist (:mod:`.audit`). The review web page and the
worklist files are the outer layer (:mod:`medsure.review`, ``medsure triage`` / ``serve`` / ``audit``).
"""

from medsure.handoff.audit import AuditResults, clopper_pearson_interval, evaluate_audit
from medsure.handoff.policy import OPTIONAL_SCORES, OptionalScore, Policy, file_sha256, load_policy, save_policy
from medsure.handoff.triage import TriageResults, guarantee_statement, nearest_neighbours, triage

__all__ = [
    "Policy",
    "OptionalScore",
    "OPTIONAL_SCORES",
    "save_policy",
    "load_policy",
    "file_sha256",
    "TriageResults",
    "triage",
    "guarantee_statement",
    "nearest_neighbours",
    "AuditResults",
    "evaluate_audit",
    "clopper_pearson_interval",
]

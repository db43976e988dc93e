"""Evaluation: one context per model, the CIRR/FashionIQ protocols, the metrics and the CIRR test files."""

from sprc_lib.evaluation.context import EvalContext, EvalSettings, make_eval_context
from sprc_lib.evaluation.protocols import chance, cirr_test_submission, validate

__all__ = ["EvalContext", "EvalSettings", "chance", "cirr_test_submission", "make_eval_context", "validate"]

"""Threat model = pattern (who attacks when) × tampering (what they send), composed."""

from gaa_env.attacks.patterns import PATTERNS, AttackPattern, make_pattern, register_pattern
from gaa_env.attacks.tampering import TAMPERINGS, TamperContext, Tampering, make_tampering, register_tampering

__all__ = ["PATTERNS", "TAMPERINGS", "AttackPattern", "TamperContext", "Tampering", "make_pattern",
           "make_tampering", "register_pattern", "register_tampering"]

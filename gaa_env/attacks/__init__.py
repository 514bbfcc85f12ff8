"""Threat model = pattern (who attacks when) × tampering (what they send), composed.

Importing the tampering modules registers their attacks in ``TAMPERINGS``: omniscient (alie, ipm,
min_max, min_sum, mimic), faults (inf, nan), poisoning (label_flip) and adaptive (af).
"""

from gaa_env.attacks import adaptive, faults, omniscient, poisoning
from gaa_env.attacks.patterns import PATTERNS, AttackPattern, make_pattern, register_pattern
from gaa_env.attacks.tampering import TAMPERINGS, TamperContext, Tampering, make_tampering, register_tampering

__all__ = ["PATTERNS", "TAMPERINGS", "AttackPattern", "TamperContext", "Tampering", "adaptive", "faults",
           "make_pattern", "make_tampering", "omniscient", "poisoning", "register_pattern", "register_tampering"]

"""csd: Concrete Score Distillation (ICLR 2026) — exact, memory-lean distillation objectives and one trainer."""

__version__ = "0.1.0"

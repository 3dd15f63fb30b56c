"""Distillers: one method a file, on the shared base in base.py."""

from hksan_keras.distillers.base import Distiller
from hksan_keras.distillers.hksan import HKSANDistiller

__all__ = ["Distiller", "HKSANDistiller"]

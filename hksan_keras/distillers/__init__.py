"""Distillers: one method a file, on the shared base in base.py.

`METHODS` maps the names used by configs and the command line
(`distill.method`, `--method`) to the classes.
"""

from hksan_keras.distillers.adversarial import AdversarialDistiller
from hksan_keras.distillers.alone import StudentAlone
from hksan_keras.distillers.anc import ANCDistiller
from hksan_keras.distillers.at import ATDistiller
from hksan_keras.distillers.base import Distiller, StageDistiller
from hksan_keras.distillers.crd import CRDDistiller
from hksan_keras.distillers.dist import DISTDistiller
from hksan_keras.distillers.dkd import DKDDistiller, DKDLSDistiller
from hksan_keras.distillers.fitnets import FitNetsDistiller
from hksan_keras.distillers.fsp import FSPDistiller
from hksan_keras.distillers.hksan import HKSANDistiller
from hksan_keras.distillers.kd import KDDistiller, KDLSDistiller
from hksan_keras.distillers.nst import NSTDistiller
from hksan_keras.distillers.reviewkd import ReviewKDDistiller
from hksan_keras.distillers.vid import VIDDistiller
from hksan_keras.distillers.xu import ConditionalAdversarialDistiller

METHODS = {
    "student": StudentAlone,
    "kd": KDDistiller,
    "kd+ls": KDLSDistiller,
    "dkd": DKDDistiller,
    "dkd+ls": DKDLSDistiller,
    "dist": DISTDistiller,
    "fitnets": FitNetsDistiller,
    "fsp": FSPDistiller,
    "at": ATDistiller,
    "nst": NSTDistiller,
    "vid": VIDDistiller,
    "reviewkd": ReviewKDDistiller,
    "crd": CRDDistiller,
    "anc": ANCDistiller,
    "xu": ConditionalAdversarialDistiller,
    "hksan": HKSANDistiller,
}


def get(method):
    """The distiller class of a method name.

    Args:
        method: One of `METHODS` ("student", "kd", "kd+ls", "dkd",
            "dkd+ls", "dist", "fitnets", "fsp", "at", "nst", "vid", "reviewkd", "crd", "anc", "xu", "hksan").

    Returns:
        The class.

    Example:

    >>> hksan_keras.distillers.get("kd")(teacher, student, temperature=4.0)
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {sorted(METHODS)}.")
    return METHODS[method]


__all__ = [
    "METHODS",
    "get",
    "Distiller",
    "StageDistiller",
    "AdversarialDistiller",
    "StudentAlone",
    "KDDistiller",
    "KDLSDistiller",
    "DKDDistiller",
    "DKDLSDistiller",
    "DISTDistiller",
    "FSPDistiller",
    "FitNetsDistiller",
    "ATDistiller",
    "NSTDistiller",
    "VIDDistiller",
    "ReviewKDDistiller",
    "CRDDistiller",
    "ANCDistiller",
    "ConditionalAdversarialDistiller",
    "HKSANDistiller",
]

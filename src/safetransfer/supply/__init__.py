"""The weight supply chain: fingerprint, verify, diff and scan model files (nothing is unpickled).

- :func:`fingerprint` -> :class:`Manifest` (file and per-tensor SHA-256, container-independent);
- :func:`verify` -> :class:`VerifyReport` (pass/fail per tensor against a manifest);
- :func:`diff_models` -> :class:`DiffReport` (per-tensor change, embedding rows -> tokens, a verdict);
- :func:`scan` -> :class:`ScanReport` (the globals a pickle would import, dangerous ones flagged).
"""

from safetransfer.supply.diff import DiffReport, diff_models, plot_diff
from safetransfer.supply.fingerprint import Manifest, fingerprint, tensor_digest
from safetransfer.supply.scan import ScanReport, scan
from safetransfer.supply.verify import VerifyReport, verify

__all__ = [
    "DiffReport", "Manifest", "ScanReport", "VerifyReport", "diff_models", "fingerprint", "plot_diff", "scan",
    "tensor_digest", "verify",
]

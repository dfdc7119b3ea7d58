"""safetransfer: security of transfer learning.

Plant the defects a pretrained teacher can carry (backdoors, poisoned data, weight
poisoning, adversarial weaknesses), measure how much a fine-tuned student inherits,
transfer safely (ReMoS and its baselines), detect poisoned samples and tampered weights.

The package imports nothing heavy and touches no network at import time.
"""

from safetransfer.errors import SafetransferError

__version__ = "0.1.0"
__all__ = ["SafetransferError", "__version__"]

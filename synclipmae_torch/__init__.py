"""The PyTorch bridge of SyncLipMAE: exported folders (`synclipmae-export`) and the PyTorch
modules that load them, and SyncNet's LSE-C / LSE-D (`syncnet`). The only package of the project
that imports torch; its PyTorch side (`modules`, `audio`, `tokens`, `layout`, `syncnet`) imports
no jax, its JAX side (`export`, `export_cli`) no torch."""

from synclipmae_torch.modules import SyncLipMAE
from synclipmae_torch.tokens import SyncTokenizer

__all__ = ["SyncLipMAE", "SyncTokenizer"]

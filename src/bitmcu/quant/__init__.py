"""Weight quantization schemes: one class per scheme, looked up in one registry.

Training (fake quantization with a straight-through estimator), packing for export, the numpy
reference and the C code generator all use the :class:`Scheme` objects here; nothing else in the
package branches on scheme names.
"""

from .schemes import REGISTRY, Scheme, get_scheme, scheme_names

__all__ = ["REGISTRY", "Scheme", "get_scheme", "scheme_names"]

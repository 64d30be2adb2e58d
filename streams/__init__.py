"""divmon: a streaming divergence monitor between an order gateway's EP3 position cache and the
risk engine's published snapshot. The pure engine lives in `streams.core`; everything else drives it."""

__version__ = "0.1.0"

from streams import _native  # before anything imports streams.core: see its doc

_native.install()

"""The ``tdc`` command line."""

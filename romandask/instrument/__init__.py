"""Facts about the Roman Wide Field Instrument."""

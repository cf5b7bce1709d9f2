"""Prediction on people's own media: faces → per-frame emotions → tables, plots, overlay, ABAW files."""

"""ocrlib: math formula recognition."""

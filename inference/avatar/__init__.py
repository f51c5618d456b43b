"""Avatar sources: drawn characters, photos and videos."""

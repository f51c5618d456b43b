"""Everything between audio in and composited frames out: front end, TTS, avatars, engines."""

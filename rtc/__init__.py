"""HTTP and WebRTC: signalling, sessions, media clock, tracks and output sinks."""

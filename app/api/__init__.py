"""HTTP API v1: route functions parse, call one service function and shape the answer."""

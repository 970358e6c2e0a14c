"""The HTTP gateway: aiohttp on uvloop, forwarding to the supervisor over gRPC."""

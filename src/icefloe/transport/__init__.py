"""The HTTP and WebSocket edge (starlette/uvicorn), imported only on demand."""

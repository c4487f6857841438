"""The request-processing chain: one grpc.aio interceptor per stage, ordered in chain.py."""

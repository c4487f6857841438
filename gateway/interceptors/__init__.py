"""The gRPC door: one grpc.aio interceptor that runs the pipeline's stages around the handlers."""

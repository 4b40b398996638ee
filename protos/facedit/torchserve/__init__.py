"""TorchServe's gRPC API (inference.proto, management.proto), compiled by `make setup`
from the protos inside TorchServe's jar; the generated *_pb2*.py are not in git."""

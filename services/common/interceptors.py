"""The shape every interceptor of ours shares: each method's handler is wrapped once (a server's
handlers never change) and the wrapped one is remembered."""
from __future__ import annotations

import grpc

# handler attribute -> the grpc function that makes a handler of that kind
_KINDS = (("unary_unary", grpc.unary_unary_rpc_method_handler),
          ("unary_stream", grpc.unary_stream_rpc_method_handler),
          ("stream_unary", grpc.stream_unary_rpc_method_handler),
          ("stream_stream", grpc.stream_stream_rpc_method_handler))


class WrappingInterceptor(grpc.ServerInterceptor):
    """Subclasses define wrap(kind, behaviour, method) -> the new behaviour, or None to keep the
    handler as it is; kind is "unary_unary", "unary_stream", "stream_unary" or "stream_stream"."""

    def __init__(self):
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def wrap(self, kind: str, behaviour, method: str):
        raise NotImplementedError

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = handler
        for kind, make in _KINDS:
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                new = self.wrap(kind, behaviour, method)
                if new is not None:
                    wrapped = make(new, request_deserializer=handler.request_deserializer,
                                   response_serializer=handler.response_serializer)
                break
        self._wrapped[method] = wrapped
        return wrapped

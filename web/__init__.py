"""facedit web: an HTTP/JSON edge and a page over the gateway (python -m web; docs/web.md).

A client like any other: it reaches the gateway through the facedit_client SDK and imports nothing
of the server (its stubs would clash with the SDK's in one process).
"""

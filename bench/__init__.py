"""`make bench` (`python -m bench`): the serving path against its ceiling and its alternatives.

    harness    timed loops, CPU time from /proc, the gRPC load harness, interleaved repetitions
    workload   what is measured on a pack: the edit, the faces, the FLOPs (flops.py)
    inprocess  raw ONNX Runtime, the in-process Edit pipeline, the eager PyTorch peer (peer.py)
    clients    the gRPC load clients of the generator service and the gateway
    served     the generator service and the gateway of a services.stack.Stack, and TorchServe
    ratios     the targets as ratios: median and [min, max] over the repetitions
    report     results.json, results.png, the printed table
    __main__   the command line
"""

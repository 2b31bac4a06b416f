"""An independent evaluation of a frozen TensorFlow graph in plain numpy, for checking eye2face_hub.facenet.

It walks the GraphDef's nodes and evaluates the few op types facenet's graph uses, with TensorFlow's own
semantics (NHWC, SAME padding split with the extra pixel after), sharing no code with the torch network.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pads(size: int, k: int, stride: int, padding: bytes) -> tuple[int, int]:
    if padding == b"VALID":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, kh: int, kw: int, stride: int, padding: bytes, fill: float) -> np.ndarray:
    """(N, OH, OW, C, kh, kw) windows of an NHWC tensor."""
    (t, b), (l, r) = _pads(x.shape[1], kh, stride, padding), _pads(x.shape[2], kw, stride, padding)
    x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=fill)
    return sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, padding: bytes) -> np.ndarray:
    kh, kw, _, c_out = w.shape
    win = _windows(x, kh, kw, stride, padding, 0.0)  # N, OH, OW, C, kh, kw
    return np.einsum("nhwcij,ijco->nhwo", win, w, optimize=True)


def run_graph(graph_file, inputs: np.ndarray, output: str = "embeddings") -> np.ndarray:
    from tensorboard.compat.proto import graph_pb2

    graph = graph_pb2.GraphDef()
    with open(graph_file, "rb") as f:
        graph.ParseFromString(f.read())
    nodes = {n.name: n for n in graph.node}
    values: dict[str, np.ndarray] = {}

    def const(node) -> np.ndarray:
        t = node.attr["value"].tensor
        shape = [d.size for d in t.tensor_shape.dim]
        dtype = np.float32 if t.dtype == 1 else np.int32
        if t.tensor_content:
            return np.frombuffer(t.tensor_content, dtype).reshape(shape)
        flat = np.array(t.float_val if t.dtype == 1 else t.int_val, dtype)
        return np.broadcast_to(flat, shape).copy() if shape else flat.reshape(())

    def evaluate(node) -> np.ndarray:
        op, a = node.op, node.attr
        args = [values[i.split(":")[0]] for i in node.input if not i.startswith("^")]  # "^x": control edge only
        if op == "Placeholder":
            return inputs.astype(np.float32)
        if op == "Const":
            return const(node)
        if op == "Conv2D":
            return conv2d(args[0], args[1], a["strides"].list.i[1], a["padding"].s)
        if op in ("BiasAdd", "Add"):
            return args[0] + args[1]
        if op == "Relu":
            return np.maximum(args[0], 0)
        if op == "Mul":
            return args[0] * args[1]
        if op == "ConcatV2":
            return np.concatenate(args[:-1], axis=int(args[-1]))
        if op in ("MaxPool", "AvgPool"):
            k, s = a["ksize"].list.i[1], a["strides"].list.i[1]
            fill = -np.inf if op == "MaxPool" else np.nan
            win = _windows(args[0], k, k, s, a["padding"].s, fill)
            return win.max(axis=(4, 5)) if op == "MaxPool" else np.nanmean(win, axis=(4, 5))
        if op == "Reshape":
            return args[0].reshape([len(inputs), *args[1].tolist()[1:]])  # the frozen graph fixed a batch of 1
        if op == "MatMul":
            return args[0] @ args[1]
        if op == "FusedBatchNorm":
            x, scale, offset, mean, var = args
            return (x - mean) / np.sqrt(var + a["epsilon"].f) * scale + offset
        if op == "Square":
            return args[0] ** 2
        if op == "Sum":
            return args[0].sum(axis=tuple(np.atleast_1d(args[1])), keepdims=bool(a["keep_dims"].b))
        if op == "Maximum":
            return np.maximum(args[0], args[1])
        if op == "Rsqrt":
            return 1 / np.sqrt(args[0])
        raise NotImplementedError(f"op {op} ({node.name})")

    pending = list(graph.node)
    while output not in values:  # evaluate every node whose inputs are ready; nodes come in any order
        ready = [n for n in pending if all(i.lstrip("^").split(":")[0] in values for i in n.input)]
        if not ready:
            raise ValueError(f"{graph_file}: {output} cannot be reached")
        for node in ready:
            values[node.name] = evaluate(node)
        pending = [n for n in pending if n.name not in values]
    return values[output]

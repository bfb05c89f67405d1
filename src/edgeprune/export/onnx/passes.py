"""Graph passes on the exported ModelProto (pure proto/numpy work, no onnxruntime).

``tidy_graph`` gives both exporters' output the same axis names; ``share_tied_lm_head`` and
``untie_transposed_initializers`` move a tied embedding between one shared copy (float32: fewer
bytes) and a separate lm_head matrix (quantized graphs: the quantizers only touch initializers).
"""

from __future__ import annotations

import numpy as np

from edgeprune.export.onnx import names


def tidy_graph(graph, n_layers: int) -> None:
    """Name the dynamic axes the same way whichever exporter ran; drop stale intermediate shapes.

    The dynamo exporter names dims after torch.export's symbols (``s25``, ``s69 + s70``); graph
    inputs and outputs get the names in names.py. Intermediate ``value_info`` would keep the
    symbols, so it is dropped (onnxruntime infers shapes itself).
    """
    axes = {
        names.INPUT_IDS: (names.BATCH, names.SEQUENCE),
        names.ATTENTION_MASK: (names.BATCH, names.TOTAL_SEQUENCE),
        names.POSITION_IDS: (names.BATCH, names.SEQUENCE),
        names.LOGITS: (names.BATCH, names.SEQUENCE, None),
    }
    axes.update({n: (names.BATCH, None, names.PAST_SEQUENCE, None) for n in names.past_names(n_layers)})
    axes.update({n: (names.BATCH, None, names.TOTAL_SEQUENCE, None) for n in names.present_names(n_layers)})
    for value in list(graph.graph.input) + list(graph.graph.output):
        for dim, name in zip(value.type.tensor_type.shape.dim, axes.get(value.name, ())):
            if name is not None:
                dim.dim_param = name  # clears dim_value too (a oneof)
    del graph.graph.value_info[:]
    graph.graph.name = "edgeprune_decoder"


def untie_transposed_initializers(model) -> int:
    """Replace ``Transpose(initializer)`` nodes by a transposed initializer; return how many.

    The dynamo exporter writes a tied lm_head as ``MatMul(x, Transpose(embed_tokens))``: one copy
    of the weights, which is what float32 wants. The quantizers only touch MatMuls whose B is an
    initializer, so before quantizing, the transpose is materialised and the lm_head (the largest
    matrix of a small model) gets quantized like every other projection.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    folded = 0
    for node in list(model.graph.node):
        if node.op_type != "Transpose" or len(node.input) != 1 or node.input[0] not in inits:
            continue
        data = numpy_helper.to_array(inits[node.input[0]])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        new = numpy_helper.from_array(np.ascontiguousarray(np.transpose(data, perm)), name=node.output[0])
        model.graph.initializer.append(new)
        model.graph.node.remove(node)
        folded += 1
    if folded:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        keep = [t for t in model.graph.initializer if t.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return folded


def share_tied_lm_head(model) -> bool:
    """Make a tied lm_head read the embedding through a Transpose instead of its own copy.

    The TorchScript exporter writes a tied lm_head's weight as a second, pre-transposed
    initializer (113 MB more for SmolLM2-135M); the dynamo exporter already shares it. Only an
    initializer that is exactly the transpose of the ``Gather``ed embedding is replaced.
    """
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    head = next((n for n in model.graph.node if n.op_type == "MatMul" and names.LOGITS in n.output), None)
    gather = next((n for n in model.graph.node if n.op_type == "Gather" and names.INPUT_IDS in n.input), None)
    if head is None or gather is None or head.input[1] not in inits or gather.input[0] not in inits:
        return False
    table, weight = inits[gather.input[0]], inits[head.input[1]]
    if list(weight.dims) != list(reversed(table.dims)):
        return False
    if not np.array_equal(numpy_helper.to_array(weight), numpy_helper.to_array(table).T):
        return False
    shared = f"{table.name}_transposed"
    model.graph.node.insert(0, helper.make_node("Transpose", [table.name], [shared], name="lm_head/shared_weight", perm=[1, 0]))
    head.input[1] = shared
    model.graph.initializer.remove(weight)
    return True


def lm_head_nodes(model) -> list[str]:
    """Names of the MatMul nodes that write the ``logits`` output (the lm_head)."""
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and names.LOGITS in n.output]

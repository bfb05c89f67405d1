"""Graph passes on the exported ModelProto (pure proto/numpy work, no onnxruntime).

``tidy_graph`` gives both exporters' output the same axis names; ``strip_metadata`` drops what
they record about the machine that ran them, so the same model gives the same bytes anywhere;
``share_tied_lm_head`` and ``untie_transposed_initializers`` move a tied embedding between one
shared copy (float32: fewer bytes) and a separate lm_head matrix (quantized graphs: the
quantizers only touch initializers).
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


def strip_metadata(model) -> int:
    """Drop every ``doc_string`` and ``metadata_props`` in ``model`` but edgeprune's own; return how many went.

    The dynamo exporter gives each node ``pkg.torch.onnx.*`` records (FX node text, module scopes
    and a stack trace naming the checkout's and the venv's absolute paths) and the graph its
    ``pkg.torch.export.*`` signature: on a 3-layer tiny model ~160 KB of a 700 KB file, and a
    different file from a checkout elsewhere. Nodes, their attributes (subgraphs and constant
    tensors included), value infos, initializers, graphs and functions all lose them; names, shapes,
    external-data locations and the opsets, what onnxruntime and onnxruntime-genai read, stay. The
    model's own metadata keeps edgeprune's keys (names.META_PREFIX, what ``edgeprune inspect`` reads).
    """
    own = [(p.key, p.value) for p in model.metadata_props if p.key.startswith(names.META_PREFIX)]
    dropped = _clear(model) - len(own)
    for key, value in own:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    graphs = [model.graph] + [t.algorithm for t in model.training_info]
    graphs += [t.initialization for t in model.training_info if t.HasField("initialization")]
    for function in model.functions:
        dropped += _clear(function, *function.value_info, *function.attribute_proto) + _strip_nodes(function.node)
    return dropped + sum(_strip_graph(g) for g in graphs)


def _strip_graph(graph) -> int:
    sparse = [t for s in graph.sparse_initializer for t in (s.values, s.indices)]
    values = (*graph.input, *graph.output, *graph.value_info, *graph.initializer, *sparse)
    return _clear(graph, *values) + _strip_nodes(graph.node)


def _strip_nodes(nodes) -> int:
    dropped = 0
    for node in nodes:
        dropped += _clear(node)
        for attr in node.attribute:
            tensors = ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
            dropped += _clear(attr, *tensors)
            dropped += sum(_strip_graph(g) for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs))
    return dropped


def _clear(*messages) -> int:
    """Empty ``doc_string`` and (where the message has it) ``metadata_props``; count what was there."""
    dropped = 0
    for message in messages:
        dropped += bool(message.doc_string)
        message.ClearField("doc_string")
        if "metadata_props" in message.DESCRIPTOR.fields_by_name:
            dropped += len(message.metadata_props)
            message.ClearField("metadata_props")
    return dropped


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

"""A channel Gather folded into the conv weights next to it, when that moves no data.

* producer side: ``Gather(conv(x), perm)`` with a dense conv, possibly through per-channel
  constants (Add of a (1, C, 1, W) constant, Relu, Clip) that only it reads: the conv emits
  its output channels in ``perm`` order (weight rows, bias and those constants permuted);
* consumer side: ``conv(Gather(x, perm))`` where every conv reading the Gather is dense or
  keeps the groups (``perm`` only moves channels inside their group): the conv reads ``x``
  with its input weights permuted.
A fold that would make a grouped conv dense is left to the emitters' cost models.
"""

from __future__ import annotations

import numpy as np
import onnx

from micronet_export.passes.graph_edit import GraphEditor, attribute

PER_CHANNEL_OPS = ("Add", "Relu", "Clip")


def _is_channel_gather(node, edit: GraphEditor) -> bool:
    return node.op_type == "Gather" and int(attribute(node, "axis", 0)) == 1 and node.input[1] in edit.consts \
        and edit.consts[node.input[1]].ndim == 1 \
        and sorted(edit.consts[node.input[1]].tolist()) == list(range(len(edit.consts[node.input[1]])))


def _producer_chain(gather, edit: GraphEditor, producer, consumers) -> list | None:
    """[conv, per-channel nodes...] from the dense conv to the Gather, each read only by the next."""
    chain, name = [], gather.input[0]
    while True:
        node = producer.get(name)
        if node is None or len(consumers.get(name, [])) != 1 or name in edit.outputs:
            return None
        chain.insert(0, node)
        if node.op_type == "Conv":
            ok = int(attribute(node, "group", 1)) == 1 and node.input[1] in edit.consts \
                and (len(node.input) < 3 or not node.input[2] or node.input[2] in edit.consts)
            return chain if ok else None
        if node.op_type not in PER_CHANNEL_OPS:
            return None
        if node.op_type == "Add" and (node.input[1] not in edit.consts or edit.consts[node.input[1]].ndim != 4):
            return None
        if node.op_type == "Clip" and any(i and i not in edit.consts for i in node.input[1:]):
            return None
        name = node.input[0]


def _fold_into_producer(gather, chain, edit: GraphEditor) -> None:
    perm = edit.consts[gather.input[1]]
    conv = chain[0]
    conv.input[1] = edit.add_const(f"{conv.input[1]}_permuted", edit.consts[conv.input[1]][perm])
    if len(conv.input) > 2 and conv.input[2]:
        conv.input[2] = edit.add_const(f"{conv.input[2]}_permuted", edit.consts[conv.input[2]][perm])
    for node in chain[1:]:
        if node.op_type == "Add" and edit.consts[node.input[1]].shape[1] > 1:
            node.input[1] = edit.add_const(f"{node.input[1]}_permuted", edit.consts[node.input[1]][:, perm])
    edit.rename_input(gather.output[0], gather.input[0])


def _keeps_groups(perm: np.ndarray, group: int) -> bool:
    block = len(perm) // group
    return bool(np.all(perm // block == np.arange(len(perm)) // block))


def _fold_into_consumers(gather, users, edit: GraphEditor) -> bool:
    perm = edit.consts[gather.input[1]]
    convs = [u for u in users if u.op_type == "Conv" and u.input[0] == gather.output[0] and u.input[1] in edit.consts]
    if len(convs) != len(users) or gather.output[0] in edit.outputs:
        return False
    if not all(int(attribute(c, "group", 1)) == 1 or (edit.consts[c.input[1]].shape[1] > 1 and
                                                       _keeps_groups(perm, int(attribute(c, "group", 1))))
               for c in convs):
        return False
    inverse = np.argsort(perm)
    for conv in convs:
        w, group = edit.consts[conv.input[1]], int(attribute(conv, "group", 1))
        k_in = w.shape[1]
        local = (inverse.reshape(group, k_in) - (np.arange(group) * k_in)[:, None])  # per group: source slot
        rows = w.reshape(group, w.shape[0] // group, k_in, *w.shape[2:])
        permuted = np.stack([rows[g][:, local[g]] for g in range(group)]).reshape(w.shape)
        conv.input[1] = edit.add_const(f"{conv.input[1]}_reads_unshuffled", permuted)
        conv.input[0] = gather.input[0]
    return True


def gathers_folded_into_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    edit = GraphEditor(out)
    done = 0
    for gather in [n for n in out.graph.node if _is_channel_gather(n, edit)]:
        producer, consumers = edit.producer(), edit.consumers()
        chain = _producer_chain(gather, edit, producer, consumers)
        if chain is not None:
            _fold_into_producer(gather, chain, edit)
            done += 1
        elif _fold_into_consumers(gather, consumers.get(gather.output[0], []), edit):
            done += 1
    edit.remove_dead()
    return out, done

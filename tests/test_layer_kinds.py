"""Every layer kind is registered in every stage: its record and fold facets
(``bnnhw.model``), its integer semantics (``bnnhw.reference.LAYER_REFERENCE``), its gateware
(``bnnhw.gateware.dataflow.STAGE_BUILDERS``) and the cost of each unit it builds
(``bnnhw.estimate.COST_MODELS``). A new kind missing from one of them fails here."""

import numpy as np
from gateware_helpers import random_conv_model, random_folding

from bnnhw.estimate import COST_MODELS
from bnnhw.gateware.dataflow import STAGE_BUILDERS, Accelerator
from bnnhw.model import LAYER_KINDS, ConvLayer, DenseLayer, MaxPoolLayer
from bnnhw.reference import LAYER_REFERENCE, apply_layer


def test_every_kind_has_a_reference_and_a_stage_builder():
    assert set(LAYER_KINDS) == set(LAYER_REFERENCE) == set(STAGE_BUILDERS)


def test_record_facets_of_each_kind():
    dense = DenseLayer(np.ones((4, 6), np.uint8), np.full(4, 3))
    conv = ConvLayer(np.ones((5, 18), np.uint8), np.full(5, 9), 3, (6, 7, 2))
    pool = MaxPoolLayer((4, 5, 3))
    assert (dense.folded, dense.maps, dense.matrix_shape, dense.vectors) == (True, False,
                                                                           (4, 6), 1)
    assert (conv.folded, conv.maps, conv.matrix_shape, conv.vectors) == (True, True,
                                                                        (5, 18), 4 * 5)
    assert (pool.folded, pool.maps) == (False, True)
    bits = np.ones((2, 6), np.uint8)
    assert apply_layer(dense, bits).tolist() == [[1] * 4] * 2         # 6 agreements >= 3


def test_every_unit_the_dataflow_builds_has_a_cost_model():
    rng = np.random.default_rng(0)
    model = random_conv_model(rng, 8, 2, 2, [6], 4)
    assert {layer.kind for layer in model.layers} == set(LAYER_KINDS)
    accelerator = Accelerator(model, random_folding(rng, model))
    for stage in accelerator.stages:
        names = {k.__name__ for k in type(stage.component).__mro__}
        assert names & set(COST_MODELS), stage.name

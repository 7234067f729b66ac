"""Functional meta-learning building blocks (MAML family, GP label propagation) on torch.func.

The inner loop never clones modules: parameters are plain tensors in a dict, the model is run
with :func:`torch.func.functional_call`, inner gradients come from :func:`torch.func.grad`, and
the tasks of a meta-batch are processed at once with :func:`torch.func.vmap`. Outer
(meta-)gradients flow through all of it with ordinary autograd.
"""

from cfs.meta.batchnorm import BatchStatNorm, use_batch_statistics
from cfs.meta.inner import InnerLoop, adapt, meta_query_logits, split_parameters
from cfs.meta.label_propagation import label_propagation, topk_affinity
from cfs.meta.picking import class_balanced_pick

__all__ = ["BatchStatNorm", "InnerLoop", "adapt", "class_balanced_pick", "label_propagation", "meta_query_logits",
           "split_parameters", "topk_affinity", "use_batch_statistics"]

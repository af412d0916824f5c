"""Training on every GPU: TensorFlow's own tf.distribute strategies, as Keras 3 uses them on its
TensorFlow backend (keras.io, "Multi-GPU distributed training with TensorFlow").

The whole run (model, feature pass, head and fine-tuning) is built and fitted inside the strategy's
scope. ``--batch-size`` stays the global batch: each of N replicas computes the gradient of
batch/N images and the replicas' gradients are summed, so one step sees the same images as on one
device and the learning rates need no change. TensorFlow is imported only when a strategy is
asked for, so single-device training still runs on Keras' other backends.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import keras

from cxr.core.errors import CxrError

from .config import Distribute


class DistributeError(CxrError):
    """A strategy cannot run here: wrong backend, or no cluster described."""


@contextlib.contextmanager
def strategy_scope(choice: Distribute) -> Iterator[int]:
    """Run the block under ``choice``'s strategy; yields how many replicas train in sync."""
    if choice == "none":
        yield 1
        return
    if keras.config.backend() != "tensorflow":
        raise DistributeError(f"--distribute {choice} needs Keras' TensorFlow backend (KERAS_BACKEND is {keras.config.backend()})")
    import tensorflow as tf

    if choice == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        _cluster()  # a missing or malformed TF_CONFIG is one line, not a hang waiting for peers
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        yield strategy.num_replicas_in_sync


def writes_results(choice: Distribute) -> bool:
    """Whether this process writes the model and run record: every worker of a multi-worker run
    trains the same model, and only the chief (or worker 0 where there is no chief) keeps it."""
    if choice != "multi-worker":
        return True
    cluster, (kind, index) = _cluster()
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def _cluster() -> tuple[dict, tuple[str, int]]:
    """TF_CONFIG's cluster, and this process's task type and index."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise DistributeError("--distribute multi-worker needs TF_CONFIG: the cluster's workers and this process's task")
    try:
        config = json.loads(text)
        return dict(config["cluster"]), (str(config["task"]["type"]), int(config["task"]["index"]))
    except (ValueError, KeyError, TypeError) as error:
        raise DistributeError(f"TF_CONFIG is not a cluster description ({type(error).__name__}: {error})") from None

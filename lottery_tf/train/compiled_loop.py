"""One XLA program per execution: the `steps_per_execution` loop compiled whole.

Keras's `jit_compile` compiles one training step. With `steps_per_execution`
= 50 its loop stays in TensorFlow's executor, which fetches each batch and
launches the step's XLA program 50 times; on the 2-core CPU of
docs/BENCHMARKS.md that dispatch took about a quarter of a LeNet step. Here an
execution first reads its batches (the same `next(iterator)` calls, in the
same order), then runs the same `model.train_step` on each inside one
compiled `tf.while_loop`, and returns the last step's logs, as Keras's loop
does. Rounds, callbacks, checkpoints and evaluations still meet at the same
execution boundaries.

Used only where Keras would compile the step with XLA anyway, under the
default strategy (one device), for several steps per execution and dense
batches of one static shape within `MAX_BYTES` together, and not for a model
class with its own `make_train_function`; anything else trains with Keras's
(or the model's) train function. One difference remains: the batches are read
before any step runs, so a *finite* dataset that ends inside an execution
leaves that execution's last batches untrained, where Keras trains them and
warns. lottery-tf's training data repeats (and `fit` gets `steps_per_epoch`),
so its rounds never reach that end.
"""

import tensorflow as tf
import tf_keras as keras


# An execution's batches are held at once (twice, briefly, while they are stacked): above this (e.g.
# 50 batches of 256 ImageNet-sized images, 7.7 GB) Keras's loop, which holds one batch at a time, is
# used instead.
MAX_BYTES = 256 * 2**20


def install(model):
    """Lets `model.fit` run each execution as one XLA program where it applies.

    Call after `model.compile`; decided again whenever Keras builds the train
    function (after every `compile`), so a recompiled model without XLA, or
    with one step per execution, trains Keras's way.
    """
    if type(model).make_train_function is not keras.Model.make_train_function:
        return  # the model brings its own training loop: it stays the model's

    def make_train_function(force=False):
        if model.train_function is not None and not force:
            return model.train_function
        # Keras's method from the class, not the instance: installing twice wraps it once.
        keras_function = keras.Model.make_train_function(model, force=True)
        if _applies(model):
            model.train_function = _whole_loop(model, keras_function, int(model._steps_per_execution.numpy()))
            model.train_tf_function = model.train_function  # what Keras exposes for tracing counts
        return model.train_function

    # Keras documents make_train_function as the method to override for custom training logic.
    model.make_train_function = make_train_function


def _applies(model):
    steps = model._steps_per_execution
    with model.distribute_strategy.scope():
        # The default strategy only: under any other, even with one replica, train_step must run
        # in a replica context (strategy.run), which an XLA loop around it does not give.
        default_strategy = not tf.distribute.has_strategy()
    return bool(model.jit_compile and not model.run_eagerly and default_strategy
                and model._cluster_coordinator is None
                and steps is not None and not model.autotune_steps_per_execution
                and int(steps.numpy()) > 1)


def _whole_loop(model, keras_function, max_steps):
    """The train function: read the execution's batches, then one compiled loop over them."""

    def run_step(data):
        outputs = model.train_step(data)
        # As Keras: the step counter moves only once the step has run (after its first output
        # that is not a variable).
        deps = [t for t in tf.nest.flatten(outputs, expand_composites=True) if not isinstance(t, tf.Variable)]
        with tf.control_dependencies(deps[:1]):
            model._train_counter.assign_add(1)
        return outputs

    @tf.function(jit_compile=True, reduce_retracing=True)
    def run_steps(batches):
        # The first step outside the loop: it creates the optimizer's slots on the first trace
        # and gives the loop the structure of the logs it carries.
        outputs = run_step(tf.nest.map_structure(lambda t: t[0], batches))
        count = tf.shape(tf.nest.flatten(batches)[0])[0]

        def body(i, _):
            return i + 1, run_step(tf.nest.map_structure(lambda t: t[i], batches))

        return tf.while_loop(lambda i, _: i < count, body, (tf.constant(1), outputs))[1]

    def train_function(iterator):
        spec = iterator.element_spec
        if not all(isinstance(s, tf.TensorSpec) and s.shape.is_fully_defined() for s in tf.nest.flatten(spec)):
            return keras_function(iterator)  # sparse, ragged or varying batches cannot be stacked
        if max_steps * sum(s.shape.num_elements() * s.dtype.size for s in tf.nest.flatten(spec)) > MAX_BYTES:
            return keras_function(iterator)  # Keras's loop holds one batch at a time
        count = tf.cast(model._steps_per_execution, tf.int32)  # Keras lowers it for an epoch's last execution
        arrays = tf.nest.map_structure(
            lambda s: tf.TensorArray(s.dtype, size=count, element_shape=s.shape), spec)
        for i in tf.range(count):
            arrays = tf.nest.map_structure(lambda a, t: a.write(i, t), arrays, next(iterator))
        return run_steps(tf.nest.map_structure(lambda a: a.stack(), arrays))

    return tf.function(train_function, reduce_retracing=True)

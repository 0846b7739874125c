"""The user's own model: a model function, or a built model, made prunable.

A model function (`--model=package.module:function`, or
`lottery_tf.run(config, model=function)`) returns a tf_keras model; it is
called with those of `input_shape`, `num_classes` (from the dataset) and
`seed` it declares, after `keras.utils.set_random_seed(seed)`, so unseeded
initializers give the same θ0 for the same seed (and a fresh one for the
random-reinit control's seed). A model that holds no masked layer yet is
converted by `make_prunable` with its defaults (every Dense and Conv2D
pruned); call `make_prunable` in the function to choose layers or groups.
"""

import tf_keras as keras

from lottery_tf import errors, sources
from lottery_tf.nn.layers import masked_layers
from lottery_tf.nn.prunable import check_graph_model, make_prunable


def build(name, input_shape, num_classes, seed):
    """The prunable model of own model `name` (see the module docstring)."""
    function = sources.resolve(name, "model")
    if not callable(function):
        raise errors.LotteryError(
            f"--model={name} is a {type(function).__name__}, not a function returning a model")
    keras.utils.set_random_seed(int(seed))
    model = sources.call(function, name, "model", input_shape=tuple(input_shape),
                         num_classes=int(num_classes), seed=int(seed))
    if not isinstance(model, keras.Model):
        raise errors.LotteryError(
            f"--model={name} returned a {type(model).__module__}.{type(model).__name__}, not a "
            "tf_keras Model (lottery-tf uses Keras 2: `import tf_keras as keras`)")
    if not masked_layers(model):
        model = make_prunable(model)
    return model


def from_built(model, seed_of_weights):
    """A model function for a built model, whose weights are θ0 at `seed_of_weights`.

    Any other seed (the random-reinit control) gets a copy with its layers'
    initializers run again.
    """
    check_graph_model(model)

    def copy(seed):
        built = keras.models.clone_model(model)
        if seed == seed_of_weights:
            built.set_weights(model.get_weights())
        return built

    copy.__name__ = model.name
    return copy

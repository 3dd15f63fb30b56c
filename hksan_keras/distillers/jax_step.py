"""The distillers' train and test steps on the JAX backend.

Keras's JAX trainer jit-compiles `train_step(state, data)`, a pure function
of the variables' values: `state` is (trainable, non-trainable, optimizer,
metrics) values, and the step returns the new ones. Here the step runs the
same pieces as the TensorFlow step (`Distiller.teacher_float32`,
`student_float32`, `update_discriminator`, `objective`, `clip`, `record`),
each inside a `keras.StatelessScope` that maps every variable of the
distiller to its current value, and collects what they assign (batch
normalisation statistics, seed generators, memory banks, metrics).

The student's forward pass runs once, under `jax.vjp`: the discriminator
then trains on its (constant) outputs, and the student side's objective is
differentiated with respect to those outputs and the student side's
variables, the two paths summed, as the TensorFlow tape does.
"""

import jax
import keras
from keras import ops

# The values of the step being traced, for `minimize` (a method's
# discriminator update runs inside it).
_ACTIVE = []


class _Values:
    """The current value of every variable of a distiller during one traced step."""

    def __init__(self, distiller, groups, state):
        self.groups = [list(group) for group in groups]
        self.variables = {}
        self.current = {}
        for variables, values in zip(self.groups, state):
            if len(variables) != len(values):
                raise ValueError(
                    f"The JAX state holds {len(values)} values for {len(variables)} variables of "
                    f"{distiller.name}: it was built before the distiller changed (recompile it)."
                )
            for variable, value in zip(variables, values):
                self.variables[id(variable)] = variable
                self.current[id(variable)] = value

    def scope(self, overrides=()):
        """A StatelessScope with every variable at its current value, `overrides` first."""
        mapping = dict(self.current)
        mapping.update((id(variable), value) for variable, value in overrides)
        # collect_losses: the losses layers add in call (activity
        # regularisers, add_loss) reach `model.losses` inside the scope.
        return keras.StatelessScope(
            state_mapping=[(self.variables[key], value) for key, value in mapping.items()],
            collect_losses=True,
        )

    def read(self, variables):
        return [self.current[id(v)] for v in variables]

    def changes(self, scope):
        """Every variable's value in `scope` (what to return out of a traced function)."""
        return {key: scope.get_current_value(variable) for key, variable in self.variables.items()}

    def set(self, changes):
        self.current.update((key, value) for key, value in changes.items() if value is not None)

    def set_variables(self, variables, values):
        self.current.update((id(v), value) for v, value in zip(variables, values))

    def state(self):
        return tuple([self.current[id(v)] for v in group] for group in self.groups)


def _stateless_update(values, optimizer, built_variables, variables, gradients):
    """`optimizer` applies `gradients` (of `variables`) to `values`, statelessly."""
    # stateless_apply matches values to the optimizer's variables by position.
    known = getattr(optimizer, "_trainable_variables", None)
    if known is not None and [id(v) for v in known] != [id(v) for v in built_variables]:
        raise ValueError(
            f"{type(optimizer).__name__} was built on other variables than the distiller trains "
            "now (a layer's trainable flag changed after compile?); compile the distiller again."
        )
    by_variable = {id(v): g for v, g in zip(variables, gradients)}
    # stateless_apply takes the gradients of every variable the optimizer
    # was built on, in that order; those not trained this step get None.
    new_variables, new_optimizer = optimizer.stateless_apply(
        values.read(optimizer.variables),
        [by_variable.get(id(v)) for v in built_variables],
        values.read(built_variables),
    )
    values.set_variables(built_variables, new_variables)
    values.set_variables(optimizer.variables, new_optimizer)


def train_step(distiller, state, data):
    """One distillation step on JAX: `(logs, new_state)` from `state` and a batch."""
    groups = (
        distiller.trainable_variables,
        distiller.non_trainable_variables,
        list(distiller.optimizer.variables) + distiller._other_optimizer_variables(),
        distiller.metrics_variables,
    )
    values = _Values(distiller, groups, state)
    with values.scope() as scope:
        images, labels = distiller.unpack_batch(data)
        teacher = distiller.teacher_float32(images)
    values.set(values.changes(scope))
    batch_size = ops.cast(ops.shape(images)[0], "float32")
    side = distiller.trainable_student_side()

    def forward(side_values):
        with values.scope(zip(side, side_values)) as scope:
            student = distiller.student_float32(images, batch_size)
            regularization = distiller.regularization()
        return (student, regularization), values.changes(scope)

    (student, regularization), pullback, changes = jax.vjp(forward, values.read(side), has_aux=True)
    values.set(changes)

    _ACTIVE.append((distiller, values))
    try:
        discriminator_terms = distiller.update_discriminator(
            labels, teacher, keras.tree.map_structure(jax.lax.stop_gradient, student)
        )
    finally:
        _ACTIVE.pop()

    def objective(student, regularization, side_values):
        with values.scope(zip(side, side_values)) as scope:
            loss, terms = distiller.objective(labels, teacher, student, regularization)
            scaled_loss = distiller.scaled_for_gradient(loss, batch_size, distiller.optimizer)
        return scaled_loss, (loss, terms, values.changes(scope))

    gradient_of = jax.value_and_grad(objective, argnums=(0, 1, 2), has_aux=True)
    (_, (loss, terms, changes)), (d_student, d_regularization, d_side) = gradient_of(
        student, regularization, values.read(side)
    )
    values.set(changes)
    (through_student,) = pullback((d_student, d_regularization))
    gradients = [a + b for a, b in zip(through_student, d_side)]

    with values.scope() as scope:
        gradients = distiller.clip(gradients)
    values.set(values.changes(scope))
    _stateless_update(values, distiller.optimizer, distiller.optimizer_variables(), side, gradients)
    with values.scope() as scope:
        logs = distiller.record(
            batch_size, loss, {**terms, **(discriminator_terms or {})}, labels, student["logits"]
        )
    values.set(values.changes(scope))
    return logs, values.state()


def minimize(distiller, loss_fn, variables, optimizer, batch_size):
    """`Distiller.minimize` inside a JAX step: one stateless update of `variables`."""
    if not _ACTIVE or _ACTIVE[-1][0] is not distiller:
        raise RuntimeError(
            f"{type(distiller).__name__}.minimize runs inside the distiller's train_step only."
        )
    values = _ACTIVE[-1][1]
    variables = list(variables)

    def pure(variable_values):
        with values.scope(zip(variables, variable_values)) as scope:
            loss = loss_fn()
            scaled_loss = distiller.scaled_for_gradient(loss, batch_size, optimizer)
        return scaled_loss, (loss, values.changes(scope))

    (_, (loss, changes)), gradients = jax.value_and_grad(pure, has_aux=True)(values.read(variables))
    values.set(changes)
    _stateless_update(values, optimizer, variables, variables, gradients)
    return loss


def test_step(distiller, state, data):
    """`Distiller.evaluate_batch` on JAX: `(logs, new_state)`."""
    groups = (distiller.trainable_variables, distiller.non_trainable_variables, distiller.metrics_variables)
    values = _Values(distiller, groups, state)
    with values.scope() as scope:
        logs = distiller.evaluate_batch(data)
    values.set(values.changes(scope))
    return logs, values.state()

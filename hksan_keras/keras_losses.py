"""Our loss terms as `keras.distillation.DistillationLoss`, for Keras's own Distiller.

For users who already train with `keras.distillation.Distiller` (Keras >=
3.12). Note two things found in Keras 3.15.1: `LogitsDistillation` with its
default loss is not Hinton's KD (it applies the KL divergence to the scaled
logits and skips T^2; `HintonKDLoss` here is), and `Distiller` reports its
losses divided by the replica count under `MirroredStrategy` (our distillers
do not).
"""

import keras

from hksan_keras import losses

_DistillationLoss = getattr(getattr(keras, "distillation", None), "DistillationLoss", object)


class HintonKDLoss(_DistillationLoss):
    """Hinton's KD, `T^2 * KL(softmax(l_T/T) || softmax(l_S/T))`.

    Args:
        temperature: T.

    Example:

    >>> distiller = keras.distillation.Distiller(
    ...     teacher, student, distillation_losses=HintonKDLoss(4.0),
    ...     student_loss_weight=0.1)
    """

    def __init__(self, temperature=4.0):
        self.temperature = float(temperature)
        self.teacher_layer_name = None
        self.student_layer_name = None

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return losses.kd_loss(teacher_outputs, student_outputs, self.temperature)

    def get_config(self):
        return {"temperature": self.temperature}


class _StageLoss(_DistillationLoss):
    def __init__(self, teacher_layer_name, student_layer_name):
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def validate_outputs(self, teacher_outputs, student_outputs):
        # Stage maps may differ in channels (and, by whole factors, in size).
        pass

    def get_config(self):
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
        }


class AttentionTransferLoss(_StageLoss):
    """Attention transfer between one teacher layer and one student layer.

    Args:
        teacher_layer_name: Name of a 4-D teacher layer.
        student_layer_name: Name of a 4-D student layer.
        p: Power of the attention maps.

    Example:

    >>> keras.distillation.Distiller(teacher, student, distillation_losses=[
    ...     AttentionTransferLoss("stage2", "stage2")],
    ...     distillation_loss_weights=[1000.0])
    """

    def __init__(self, teacher_layer_name, student_layer_name, p=2.0):
        super().__init__(teacher_layer_name, student_layer_name)
        self.p = float(p)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return losses.attention_transfer_loss([teacher_outputs], [student_outputs], self.p)

    def get_config(self):
        return {**super().get_config(), "p": self.p}


class NeuronSelectivityLoss(_StageLoss):
    """Neuron selectivity transfer (polynomial-kernel MMD) between two layers.

    Args:
        teacher_layer_name: Name of a 4-D teacher layer.
        student_layer_name: Name of a 4-D student layer.

    Example:

    >>> keras.distillation.Distiller(teacher, student, distillation_losses=[
    ...     NeuronSelectivityLoss("stage3", "stage3")],
    ...     distillation_loss_weights=[50.0])
    """

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return losses.neuron_selectivity_loss([teacher_outputs], [student_outputs])

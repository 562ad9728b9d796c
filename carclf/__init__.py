"""carclf: train and serve car-photo classifiers by transfer learning from ImageNet backbones.

The public API is imported lazily, so ``import carclf`` is instant and TensorFlow loads only when a
function that needs it is first used::

    import carclf
    model = carclf.load_model()                  # newest trained bundle in models/, or the default model
    result = model.predict("photo.jpg", tta=8, top_k=3)
    report = carclf.evaluate(model, "data/val", tta=4)
    run_id = carclf.start_run(carclf.load_config(preset="quick", overrides={"data": "data/train"}))

Training in the current process is ``carclf.train.train(config, run_dir)``; ``start_run`` launches it as a
background process that survives the caller, which is what the dashboard uses.
"""

import importlib
import os

from carclf import requirements_check

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks the network on import otherwise
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow is not a dependency of the package (it keeps the one installed): a too-old TensorFlow or
# Keras fails here in one line, a missing one when something first needs it (the dashboard must still
# import carclf to say what to install).
requirements_check.check_versions()

__version__ = "0.1.0"

# Public name -> module that defines it.
_LAZY = {
    "CarclfError": "carclf.errors",
    "load_image": "carclf.images",
    "load_model": "carclf.predict",
    "evaluate": "carclf.evaluation",
    "scan_dataset": "carclf.data",
    "TrainConfig": "carclf.config",
    "load_config": "carclf.config",
    "start_run": "carclf.runs",
    "list_runs": "carclf.runs",
    "list_backbones": "carclf.backbones",
}

__all__ = sorted(_LAZY)


# Public names that cannot work without TensorFlow: asking for one names what to install, before any import.
_NEEDS_TENSORFLOW = frozenset({"load_model", "evaluate", "start_run"})


def __getattr__(name):
    if name in _LAZY:
        if name in _NEEDS_TENSORFLOW:
            requirements_check.check_versions(need_installed=True)
        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as error:
            message = requirements_check.missing_framework_message(error)
            if message:
                raise ImportError(message) from None  # one line naming what to install, not Keras' traceback
            raise
        return getattr(module, name)
    raise AttributeError(f"module 'carclf' has no attribute {name!r}")

"""The model zoo: `create_model(name, num_classes, width, **kwargs)` builds any registered
architecture; importing this package registers them all.
"""

from pcdistill.models import dgcnn, pointmlp, pointnet, pointnet2  # noqa: F401  (registration)
from pcdistill.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]

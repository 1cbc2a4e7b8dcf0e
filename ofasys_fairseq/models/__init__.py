from .ofasys_model import OFASysConfig, OFASysModel  # noqa: F401

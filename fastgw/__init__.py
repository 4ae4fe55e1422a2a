"""fastgw: a self-hosted, native-accelerated API gateway that runs the AWS API Gateway model."""

from ._version import __version__

__all__ = ["__version__"]

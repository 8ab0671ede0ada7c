"""The contract shared by offline jobs, training and the online service.

Only numpy, pydantic and the standard library are imported here, so the service (which must not
import torch) can depend on it. It defines the artefact bundle (manifest, checksums, atomic writes),
the names of Qdrant collections and Redis keys, and the feedback log format.
"""

CONTRACT_VERSION = 1

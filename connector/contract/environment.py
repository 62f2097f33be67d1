"""Every `GGIC_*` environment variable the Python code reads, named once.

The runtime and the connectors read these; the install scripts have their own (`GGIC_HOME`, `GGIC_INSTALL_*`,
documented in `install/`). Plain constants, for Python 2.7 and 3: a function process's runtime loop imports this
file from its Lambda site (`connector/core/lambda_site.py`).
"""

# The runtime (`ggic`)
STATE_DIR_ENV = "GGIC_STATE_DIR"                      # default --state-dir of every command
ALLOW_PLATFORM_MISMATCH_ENV = "GGIC_ALLOW_PLATFORM_MISMATCH"  # 1: a connector for another platform only warns
HANDLER_ENV = "GGIC_HANDLER"                          # the handler a function process's runtime loop imports

# A connector, as our runtime starts it (a real Greengrass core sets none of them)
CONNECTOR_ARN_ENV = "GGIC_CONNECTOR_ARN"              # the catalog connector (version, platform) of the parameters
CONNECTOR_ID_ENV = "GGIC_CONNECTOR_ID"                # the connector's Id in its definition, for messages
MODEL_CACHE_ENV = "GGIC_MODEL_CACHE"                  # where fetched and converted models are kept

# The image classification connector's inference workers (`ggic run --engine/--workers/--max-image-pixels`)
ENGINE_ENV = "GGIC_ENGINE"                            # mxnet, onnxruntime or opencv (default: per platform)
WORKERS_ENV = "GGIC_WORKERS"                          # inference workers: N or auto
ENGINE_THREADS_ENV = "GGIC_ENGINE_THREADS"            # engine (OpenMP) threads per worker
MAX_IMAGE_PIXELS_ENV = "GGIC_MAX_IMAGE_PIXELS"        # the largest image a request may decode to
GPU_FALLBACK_ENV = "GGIC_GPU_FALLBACK"                # cpu: serve on the CPU when GPUAcceleration=GPU finds no GPU
MAX_IMAGE_SCANS_ENV = "GGIC_MAX_IMAGE_SCANS"          # the most scans a (progressive) JPEG request may have

# Extracting archives (model.tar.gz, Lambda deployment zips): connector.contract.archives.ArchiveLimits
ARCHIVE_MAX_MEMBERS_ENV = "GGIC_ARCHIVE_MAX_MEMBERS"            # members (files and directories)
ARCHIVE_MAX_MEMBER_BYTES_ENV = "GGIC_ARCHIVE_MAX_MEMBER_BYTES"  # bytes of one member, decompressed
ARCHIVE_MAX_TOTAL_BYTES_ENV = "GGIC_ARCHIVE_MAX_TOTAL_BYTES"    # bytes of all members, decompressed
ARCHIVE_MAX_RATIO_ENV = "GGIC_ARCHIVE_MAX_RATIO"                # decompressed / compressed bytes
